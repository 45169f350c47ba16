"""Which weights the demo runs with: torchvision's pretrained ones where they can be had, else random.

Usage: python3 hack/demo-weights.py MODEL [TIMEOUT_SECONDS]

Prints ``DEFAULT`` when the model's pretrained weights are in torch's cache ($TORCH_HOME/hub/
checkpoints) or download within the timeout (default 120 s a stall), else ``none``, and then says
in one line on stderr which it chose and why. The job loads DEFAULT from the same cache file.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys


def main(argv: list[str]) -> int:
    model, timeout = argv[0], float(argv[1]) if len(argv) > 1 else 120.0
    from torch.hub import get_dir, load_state_dict_from_url
    from torchvision.models import get_model_weights

    url = get_model_weights(model).DEFAULT.url
    cached = os.path.join(get_dir(), "checkpoints", os.path.basename(url))
    if not os.path.exists(cached):
        socket.setdefaulttimeout(timeout)  # a network that drops packets fails instead of hanging
        try:  # torch prints "Downloading: ..." on stdout, which is this script's answer
            with contextlib.redirect_stdout(io.StringIO()):
                load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True,
                                         weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means: no pretrained weights here
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"demo: pretrained weights for {model} could not be downloaded ({reason}); using "
                  "random weights: the pipeline is real, the boxes are meaningless", file=sys.stderr)
            print("none")
            return 0
    print(f"demo: pretrained COCO weights for {model} ({cached})", file=sys.stderr)
    print("DEFAULT")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
