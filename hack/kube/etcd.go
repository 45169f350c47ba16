package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// runEtcd starts a single-member etcd server for tests. Only the handful of
// flags the harness needs are supported; the names follow etcd's own flags.
func runEtcd(args []string) int {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "default.etcd", "data directory")
	listenClient := fs.String("listen-client-urls", "http://127.0.0.1:2379", "client URL to listen on")
	advertiseClient := fs.String("advertise-client-urls", "", "client URL to advertise (defaults to listen-client-urls)")
	listenPeer := fs.String("listen-peer-urls", "http://127.0.0.1:2380", "peer URL to listen on")
	listenMetrics := fs.String("listen-metrics-urls", "", "optional URL serving /metrics and /health")
	unsafeNoFsync := fs.Bool("unsafe-no-fsync", false, "skip fsync (test data only)")
	quota := fs.Int64("quota-backend-bytes", 0, "backend quota (0 = etcd default)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn, error")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	parse := func(flagName, value string) (url.URL, bool) {
		u, err := url.Parse(value)
		if err != nil || u.Host == "" {
			fmt.Fprintf(os.Stderr, "etcd: bad --%s %q: %v\n", flagName, value, err)
			return url.URL{}, false
		}
		return *u, true
	}
	if *advertiseClient == "" {
		*advertiseClient = *listenClient
	}
	lc, ok1 := parse("listen-client-urls", *listenClient)
	ac, ok2 := parse("advertise-client-urls", *advertiseClient)
	lp, ok3 := parse("listen-peer-urls", *listenPeer)
	if !ok1 || !ok2 || !ok3 {
		return 2
	}

	cfg := embed.NewConfig()
	cfg.Name = "default"
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = []url.URL{lc}
	cfg.AdvertiseClientUrls = []url.URL{ac}
	cfg.ListenPeerUrls = []url.URL{lp}
	cfg.AdvertisePeerUrls = []url.URL{lp}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = *unsafeNoFsync
	cfg.LogLevel = *logLevel
	cfg.LogOutputs = []string{"stderr"}
	if *quota > 0 {
		cfg.QuotaBackendBytes = *quota
	}
	if *listenMetrics != "" {
		lm, ok := parse("listen-metrics-urls", *listenMetrics)
		if !ok {
			return 2
		}
		cfg.ListenMetricsUrls = []url.URL{lm}
	}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: start: %v\n", err)
		return 1
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "etcd: ready, serving clients on %s\n", lc.String())
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		fmt.Fprintln(os.Stderr, "etcd: not ready after 60s")
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "etcd: %v, stopping\n", s)
		return 0
	}
}
