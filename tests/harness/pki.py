"""Per-session PKI for the test control plane, generated with ``cryptography``.

Everything here is throw-away test material written into the session's temp
directory: a CA, the kube-apiserver serving certificate, client certificates
(admin in ``system:masters``; in node mode also the apiserver's kubelet client)
and the service-account token signing key. :func:`issue` adds certificates
signed by the same CA later (the node's kubelet client and serving certificates).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=2)


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Paths of the generated files."""

    ca: CertPair
    apiserver: CertPair
    admin: CertPair
    sa_private_key: Path
    sa_public_key: Path
    #: The apiserver's client certificate towards kubelets (node mode only).
    kubelet_client: CertPair | None = None


class _Ca:
    def __init__(self, loaded: tuple | None = None) -> None:
        if loaded:
            self.key, self.cert = loaded
            return
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        name = _name("detectionjob-test-ca")
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self,
        common_name: str,
        orgs: tuple[str, ...] = (),
        *,
        server: bool = False,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, orgs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if dns or ips:
            sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())

    @classmethod
    def load(cls, pair: CertPair) -> _Ca:
        key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
        return cls((key, x509.load_pem_x509_certificate(pair.cert.read_bytes())))


def _write_pair(directory: Path, stem: str, key, cert) -> CertPair:
    p = CertPair(directory / f"{stem}.crt", directory / f"{stem}.key")
    _write_cert(p.cert, cert)
    _write_key(p.key, key)
    return p


def generate(
    directory: Path,
    service_ip: str = "10.0.0.1",
    *,
    host_ips: tuple[str, ...] = (),
    kubelet_client: bool = False,
) -> Pki:
    """Write a CA, apiserver serving cert, admin client cert and SA keys into ``directory``.

    ``host_ips`` are added to the apiserver's serving certificate; ``kubelet_client``
    also issues the apiserver's client certificate for kubelets (``system:masters``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca = _Ca()

    def pair(stem: str, key, cert) -> CertPair:
        return _write_pair(directory, stem, key, cert)

    ca_pair = pair("ca", ca.key, ca.cert)
    apiserver = pair(
        "apiserver",
        *ca.issue(
            "kube-apiserver",
            server=True,
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", service_ip, *host_ips),
        ),
    )
    admin = pair("admin", *ca.issue("detectionjob-admin", ("system:masters",)))
    kubelet_pair = None
    if kubelet_client:
        kubelet_pair = pair(
            "apiserver-kubelet-client", *ca.issue("kube-apiserver-kubelet-client", ("system:masters",))
        )

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_private = directory / "sa.key"
    sa_public = directory / "sa.pub"
    _write_key(sa_private, sa_key)
    sa_public.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Pki(ca_pair, apiserver, admin, sa_private, sa_public, kubelet_pair)


def issue(
    pki: Pki,
    directory: Path,
    stem: str,
    common_name: str,
    orgs: tuple[str, ...] = (),
    *,
    server: bool = False,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> CertPair:
    """Issue one more certificate from ``pki``'s CA into ``directory/stem.{crt,key}``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _Ca.load(pki.ca)
    return _write_pair(directory, stem, *ca.issue(common_name, orgs, server=server, dns=dns, ips=ips))
