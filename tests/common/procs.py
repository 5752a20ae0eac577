"""ta-feed child processes for the end-to-end suites (own process group, logs in files)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from . import pg


class Child:
    """A ta-feed child in its own process group; stdout/stderr go to files in logdir."""

    def __init__(self, name: str, args: list[str], logdir: str, env: dict):
        self.name = name
        self.out_path = os.path.join(logdir, f"{name}.out")
        self.err_path = os.path.join(logdir, f"{name}.log")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.p = subprocess.Popen([pg.ta_feed_bin(), *args], stdout=self._out, stderr=self._err,
                                  stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def alive(self) -> bool:
        return self.p.poll() is None

    def interrupt(self, timeout: float = 30) -> int:
        """SIGINT to the child; returns its exit code (kills it on timeout)."""
        if self.alive():
            os.kill(self.p.pid, signal.SIGINT)
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not exit within {timeout} s after SIGINT")

    def kill(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)  # its own group (start_new_session)
            except ProcessLookupError:
                pass
            self.p.wait(timeout=10)

    def close(self) -> None:
        self._out.close()
        self._err.close()

    def tail(self, n: int = 30) -> str:
        parts = []
        for path in (self.out_path, self.err_path):
            try:
                with open(path, "rb") as f:
                    lines = f.read().decode(errors="replace").splitlines()
            except OSError:
                continue
            parts.append(f"--- {path} (last {min(n, len(lines))} of {len(lines)} lines) ---\n"
                         + "\n".join(lines[-n:]))
        return "\n".join(parts)

    def stderr_text(self) -> str:
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")


def wait_listening(replay: Child, deadline: float) -> str:
    """The address from the replay's first stdout line `listening on ADDR`."""
    while True:
        with open(replay.out_path, "rb") as f:
            first = f.readline().decode()
        m = re.match(r"listening on (\S+)\n", first)
        if m:
            return m.group(1)
        if not replay.alive():
            pytest.fail("ta-feed replay exited before listening:\n" + replay.tail())
        if time.monotonic() > deadline:
            pytest.fail("ta-feed replay did not print its address in time")
        time.sleep(0.05)


def finish(children: list[Child], ok: bool, dbname: str, logdir: str, tail: int = 30) -> None:
    """Kill what still runs; on failure print each child's log tail, on success drop the test
    database and the logs (logs are kept only on failure)."""
    import shutil
    for ch in children:
        ch.kill()
        ch.close()
    if not ok:
        for ch in children:
            print(ch.tail(tail))
    else:
        pg.drop_database(dbname)
        shutil.rmtree(logdir, ignore_errors=True)
