"""What a user sees on stderr: our lines only (Ray's chatter with -v), a live bar on a terminal,
plain progress lines in a pipe, and errors whatever the verbosity."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

from jobtest import FAST_MODEL, detectionjob, joining

from inference.console import Console, bar_text, human_summary, progress_text

RUN = ["run", "--model", FAST_MODEL, "--weights", "none"]
SNAP = {"done": 812, "to_do": 2048, "failed": 1, "listing_finished": True}


def test_progress_text_has_count_percent_rate_and_eta():
    assert progress_text(SNAP, 100.0) == "812/2048 images (39.6%), 1 failed, 8.12 images/s, ETA 2:32"
    listing = {**SNAP, "to_do": 900, "listing_finished": False}
    assert progress_text(listing, 100.0) == "812/900+ images (still listing), 1 failed, 8.12 images/s"
    hours = {**SNAP, "done": 10, "to_do": 100_000}
    assert progress_text(hours, 100.0).endswith("ETA 277:45:00")


def test_bar_fills_with_the_share_done_and_fits_the_terminal():
    half = bar_text({**SNAP, "done": 1024}, 100.0, 120)
    cells = half.split("  ")[0]
    assert len(cells) == 40 and cells.count("█") == 20 and cells.count("░") == 20
    assert len(bar_text(SNAP, 100.0, 70)) < 70


def test_a_terminal_gets_a_bar_redrawn_in_place_and_lines_above_it():
    out = io.StringIO()
    console = Console(out, tty=True)
    console.progress(SNAP, 100.0)
    console.note("a node was lost")
    console.progress({**SNAP, "done": 2048}, 200.0, final=True)
    text = out.getvalue()
    # the note clears the bar's line, prints itself, then the bar comes back below it
    first = bar_text(SNAP, 100.0, 100)
    assert text == ("\r\x1b[2K" + first + "\r\x1b[2K[detectionjob] a node was lost\n" + first
                    + "\r\x1b[2K" + bar_text({**SNAP, "done": 2048}, 200.0, 100) + "\n")


def test_a_pipe_gets_plain_lines():
    out = io.StringIO()
    console = Console(out, tty=False)
    console.progress(SNAP, 100.0)
    console.note("listing done")
    assert out.getvalue() == ("[detectionjob] 812/2048 images (39.6%), 1 failed, 8.12 images/s, ETA 2:32\n"
                              "[detectionjob] listing done\n")


def test_the_native_filter_drops_only_rays_known_notices():
    """Lines written straight to file descriptor 2 (as Ray's C++ core does) pass, except the
    listed notice; Python's stderr passes; nothing is lost when the filter closes."""
    code = r"""
import os, sys
from inference.console import NativeFilter
f = NativeFilter()
os.write(2, b"[2026-12-03 08:49:17,143 E 1 1] core_worker.cc:2465: Actor with class name: 'X' and ID: 'y' "
            b"has constructor arguments in the object store and max_restarts > 0. If ...\n")
os.write(2, b"[2026-12-03 08:49:17,143 E 1 1] core_worker.cc:99: something that matters\n")
print("from python", file=sys.stderr)
os.write(2, b"no newline at the end")
f.close()
print("after close", file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ("[2026-12-03 08:49:17,143 E 1 1] core_worker.cc:99: something that matters\n"
                           "from python\nno newline at the end\nafter close\n")


def test_a_run_in_a_pipe_prints_only_our_lines(cli_run):
    done = cli_run.done  # Python's default warnings, as for a user
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("[detectionjob] ") for line in lines), done.stderr
    # the last progress line, then the evaluation's (the shared run evaluates its results)
    assert lines[-2].startswith("[detectionjob] 4/4 images (100.0%), 0 failed, "), done.stderr
    assert lines[-1].startswith("[detectionjob] evaluated against "), done.stderr


def test_verbose_brings_rays_own_lines_back(ray_runtime, sample_dir, tmp_path, ray_tmpdir):
    done = detectionjob([*RUN, "-v", "--input", str(sample_dir), "--output", str(tmp_path / "out"),
                         *joining(ray_runtime)], ray_tmpdir, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "streaming_executor" in done.stderr  # Ray Data's plan and "execution finished" lines


def test_errors_show_without_verbose(ray_runtime, sample_dir, tmp_path, ray_tmpdir):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a state_dict")
    done = detectionjob(["run", "--model", FAST_MODEL, "--weights", str(bad), "--input", str(sample_dir),
                         "--output", str(tmp_path / "out"), *joining(ray_runtime)], ray_tmpdir, tmp_path)
    assert done.returncode != 0
    assert "UnpicklingError" in done.stderr  # why the detector could not start


def test_a_run_on_a_terminal_draws_a_bar_and_ends_in_a_few_lines(sample_dir, tmp_path, ray_tmpdir):
    """stdout and stderr are a pseudo-terminal: the bar is redrawn in place and ends full, on its own
    line; the summary is a few lines for a person (a pipe gets the JSON, the file has it all)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 columns
    env = {**os.environ, "RAY_TMPDIR": ray_tmpdir}
    env.pop("RAY_ADDRESS", None)
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.Popen([sys.executable, "-m", "inference", *RUN, "--input", str(sample_dir),
                             "--output", str(tmp_path / "out")], stdout=terminal, stderr=terminal,
                            stdin=subprocess.DEVNULL, cwd=tmp_path, env=env)
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the last writer closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(controller)
    assert proc.wait(timeout=60) == 0, seen.decode(errors="replace")[-3000:]
    text = seen.decode().replace("\r\n", "\n")  # the terminal turns each newline into CR LF
    redraws = text.split("\r\x1b[2K")
    assert len(redraws) > 3, text  # drawn, then redrawn in place
    bar, *after = redraws[-1].split("\n")
    assert bar.startswith("█" * 40 + "  4/4 images (100.0%), 0 failed, ")
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert after == [line for line in human_summary(summary).split("\n")] + [""]
    assert after[0].startswith("4 images, 0 failed, ")
    assert "Ray" not in text and "WARNING" not in text and "INFO" not in text

