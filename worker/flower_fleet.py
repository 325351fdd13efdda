"""``idle-accel flower``: Flower with a Fleet page, behind Flower's own login.

Every coupling to Flower's internals is here. The launcher runs Flower's own
``celery flower`` command with one change: its application class is
:class:`FleetFlower`, which adds three handlers (the page, its JSON, the
emergency switch), a "Fleet" link in Flower's navigation bar, and a sampler
that keeps the capacity history. Plain ``celery -A compute.app flower`` still
works; it just has no Fleet page.

The handlers derive from Flower's ``BaseHandler``, so they take the same
login as every Flower page (basic auth or OAuth) and refuse cross-site
posts; the switch is refused in ``--read_only`` mode.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import redis
import tornado.template
from flower import command as flower_command
from flower.app import Flower
from flower.views import BaseHandler
from tornado import web
from tornado.ioloop import IOLoop, PeriodicCallback

from compute import redis_clients
from compute.settings import Settings
from worker import capacity_history, credit, fleet_mode, fleet_view
from worker.status import read_fleet

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
OUR_TEMPLATES = ("fleet.html",)
#: Added to Flower's navigation bar, after its own tabs (before the first ``</ul>``).
NAV_LINK = (b'<li class="nav-item"><a class="nav-link{% if active_tab == \'fleet\' %} active'
            b'{% end %}" href="{{ reverse_url(\'fleet\') }}" id="nav-fleet">Fleet</a></li>\n')


class FleetLoader(tornado.template.Loader):
    """Flower's templates, plus ours, and Flower's navbar with a Fleet link."""

    def _create_template(self, name: str) -> tornado.template.Template:
        if name in OUR_TEMPLATES:
            source = (TEMPLATES / name).read_bytes()
        else:
            source = Path(self.root, name).read_bytes()
            if name == "navbar.html" and b"</ul>" in source:
                source = source.replace(b"</ul>", NAV_LINK + b"</ul>", 1)
        return tornado.template.Template(source, name=name, loader=self)


def _snapshot(client: Any) -> dict[str, Any]:
    """Everything the page shows, read from Redis (blocking: run it in the executor)."""
    workers = read_fleet(client)
    return {"workers": workers, "credits": credit.table(client),
            "emergency": fleet_mode.read(client).emergency,
            "history": capacity_history.read(client)}


class FleetView(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        app: FleetFlower = self.application  # type: ignore[assignment]
        now = time.time()
        data = await IOLoop.current().run_in_executor(None, _snapshot, app.fleet_client)
        current = capacity_history.measure(data["workers"], now)
        self.render("fleet.html", active_tab="fleet", page={
            "rows": fleet_view.rows(data["workers"], data["credits"]),
            "mode": fleet_view.fleet_mode(data["workers"], data["emergency"]),
            "emergency": data["emergency"],
            "now": current,
            "plot": fleet_view.plot([*data["history"], current], now),
            "read_only": app.options.read_only,
            "switched": self.get_argument("switched", None),
        })


class FleetApi(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        app: FleetFlower = self.application  # type: ignore[assignment]
        data = await IOLoop.current().run_in_executor(None, _snapshot, app.fleet_client)
        data["history"] = [asdict(sample) for sample in data["history"]]
        self.write(data)


class EmergencySwitch(BaseHandler):
    @web.authenticated
    async def post(self) -> None:
        app: FleetFlower = self.application  # type: ignore[assignment]
        if app.options.read_only:
            raise web.HTTPError(403, "Flower runs read-only: the emergency switch is off")
        switch = self.get_argument("switch", "")
        if switch not in ("on", "off"):
            raise web.HTTPError(400, "switch: say 'on' or 'off'")
        mode = fleet_mode.Mode(switch == "on", self.get_argument("requeue_running", "") == "on")
        await IOLoop.current().run_in_executor(None, fleet_mode.switch, app.fleet_client,
                                               app.capp, mode)
        log.warning("fleet mode switched %s from Flower by %s", switch.upper() if mode.emergency
                    else switch, self.current_user if isinstance(self.current_user, str)
                    else "the basic-auth login")
        self.redirect(self.reverse_url("fleet") + f"?switched={switch}")


class FleetFlower(Flower):
    """Flower's application with the Fleet page; see the module's docstring."""

    def __init__(self, options: Any = None, capp: Any = None, events: Any = None,
                 io_loop: Any = None, **kwargs: Any) -> None:
        kwargs["template_loader"] = FleetLoader(kwargs.get("template_path")
                                                or str(Path(flower_command.__file__).parent
                                                       / "templates"))
        super().__init__(options=options, capp=capp, events=events, io_loop=io_loop, **kwargs)
        prefix = "/" + self.options.url_prefix.strip("/") if self.options.url_prefix else ""
        self.add_handlers(r".*", [
            web.url(prefix + r"/fleet", FleetView, name="fleet"),
            web.url(prefix + r"/fleet/emergency", EmergencySwitch, name="fleet-emergency"),
            web.url(prefix + r"/api/fleet", FleetApi, name="api-fleet"),
        ])
        settings = Settings.load()
        self.fleet_client = redis_clients.connect(settings.backend_url,
                                                  settings.redis_options(settings.backend_url))
        self._sampler: PeriodicCallback | None = None

    def sample(self) -> None:
        """Record the fleet's capacity now (blocking; errors are logged, never raised)."""
        try:
            capacity_history.record(self.fleet_client, capacity_history.measure(
                read_fleet(self.fleet_client), time.time()))
        except redis.RedisError as exc:
            log.warning("capacity not sampled: %s", exc)

    def start(self) -> None:
        def tick() -> None:
            self.io_loop.run_in_executor(None, self.sample)

        self._sampler = PeriodicCallback(tick, capacity_history.STEP * 1000)
        self._sampler.start()
        self.io_loop.add_callback(tick)
        super().start()

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        super().stop()


def run(argv: list[str]) -> None:
    """``celery -A compute.app flower ARGV...`` with :class:`FleetFlower` as the application."""
    from celery.bin.celery import main as celery_main

    flower_command.Flower = FleetFlower  # the command builds its app from this module name
    sys.argv = ["celery", "-A", "compute.app", "flower", *argv]
    celery_main()
