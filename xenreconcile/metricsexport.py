"""The metrics exporter: the metrics of `metrics` in a prometheus_client
registry, served over HTTP (`metrics_listen`) and written to a file for
node_exporter's textfile collector (`metrics_textfile`).

Imported only when one of those keys is set, so the daemon starts without
prometheus_client otherwise. The loop's thread calls `pass_done` and
`create_done`; the HTTP server's thread only reads, and the gauges it reads are
one immutable snapshot swapped in whole, so a scrape never sees half a pass.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from xenreconcile import metrics
from xenreconcile.config import split_address
from xenreconcile.models import CreateAction, CreateResult

TEXTFILE_MODE = 0o644  # node_exporter does not run as root
TEMP_SUFFIX = ".tmp"  # not `.prom`: node_exporter never reads a half-written file


class PassCollector(Collector):
    """The gauges of `metrics.GAUGES`, from the last pass given to `update`."""

    def __init__(self) -> None:
        self._samples: dict[str, list[metrics.Sample]] = {}

    def update(self, view: metrics.PassView) -> None:
        """Take the samples of a new pass (one assignment: readers see old or new)."""
        self._samples = metrics.gauge_samples(view)

    def collect(self) -> Iterator[Metric]:
        """Yield one gauge family per entry of `metrics.GAUGES`."""
        samples = self._samples
        for gauge in metrics.GAUGES:
            family = GaugeMetricFamily(gauge.name, gauge.help, labels=list(gauge.labels))
            for labels, value in samples.get(gauge.name, ()):
                family.add_metric(list(labels), value)
            yield family


class MetricsExporter:
    """One registry with every metric, and where it goes (HTTP, a textfile)."""

    def __init__(self, listen: str | None, textfile: str | None, log: Any) -> None:
        self.log = log
        self.textfile = textfile
        self.registry = CollectorRegistry()
        self.passes = PassCollector()
        self.registry.register(self.passes)
        self.counters = {
            c.name: Counter(c.name, c.help, list(c.labels), registry=self.registry)
            for c in metrics.COUNTERS
        }
        self.histograms = {
            h.name: Histogram(h.name, h.help, buckets=h.buckets, registry=self.registry)
            for h in metrics.HISTOGRAMS
        }
        self.server: Any = None
        self.thread: threading.Thread | None = None
        if textfile is not None:
            remove_stale_temps(textfile)
        if listen is not None:
            self._listen(listen)

    def _listen(self, listen: str) -> None:
        """Start the HTTP server; a failure is logged and the daemon goes on without it."""
        host, port = split_address(listen)
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            self.log.error("metrics_listen_failed", address=listen, error=str(exc))
            return
        self.log.info("metrics_listening", address=listen)

    def count(self, counter: metrics.CounterDef, *labels: str) -> None:
        """Add one to `counter` for the label values `labels`."""
        self.counters[counter.name].labels(*labels).inc()

    def observe(self, histogram: metrics.HistogramDef, seconds: float) -> None:
        """Record `seconds` in `histogram`."""
        self.histograms[histogram.name].observe(seconds)

    def create_done(self, action: CreateAction, result: CreateResult) -> None:
        """Count a create that ended and record how long it took."""
        self.count(metrics.CREATES, action.name, metrics.create_outcome(result))
        self.observe(metrics.CREATE_DURATION, result.duration)

    def pass_done(self, view: metrics.PassView) -> None:
        """Take a pass's gauges, and write the textfile when there is one."""
        self.passes.update(view)
        if self.textfile is not None:
            try:
                write_textfile(self.textfile, generate_latest(self.registry))
            except OSError as exc:
                self.log.warning("metrics_textfile_failed", file=self.textfile, error=str(exc))

    def close(self) -> None:
        """Stop the HTTP server (the textfile stays: it says when the last pass was)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join()
            self.thread = None


def temp_prefix(path: str) -> str:
    """The name prefix of the temp files written beside `path`."""
    return f".{os.path.basename(path)}."


def write_textfile(path: str, data: bytes) -> None:
    """Replace `path` by `data` atomically: a reader sees the old or the new file,
    whole. The temp file is created anew (never following a planted symlink) in
    the same directory, mode 0644, and removed if anything fails."""
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), TEXTFILE_MODE)
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def remove_stale_temps(path: str) -> None:
    """Remove the temp files a killed daemon left beside `path` (ours only: its
    prefix and suffix, regular files owned by this user)."""
    directory = os.path.dirname(path)
    prefix = temp_prefix(path)
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if not (entry.name.startswith(prefix) and entry.name.endswith(TEMP_SUFFIX)):
                continue
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if entry.is_file(follow_symlinks=False) and info.st_uid == os.geteuid():
                    os.unlink(entry.path)
