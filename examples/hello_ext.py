"""An extension: a service of your own beside the gateway's (the README's example).

Configured as ``"EXTENSIONS": {"hello": {"module": "examples.hello_ext",
"settings": {"every_s": 5}}}``, it runs as its own supervisord program. It
greets the HES each time the client's link comes up, sends a count to the HES
every ``every_s`` seconds, and answers an ``ask`` operation sent to its inbox
(``hello.in``) by publishing ``hello.answer``.
"""

from __future__ import annotations

import logging
from typing import Any

from common import bus
from common.service import Service

log = logging.getLogger("meterlink.hello")


class Hello(Service):
    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config)
        settings = config["EXTENSIONS"][name]["settings"]
        self.device = config["DEVICE"]["name"]
        self.sent = 0
        self.every(float(settings.get("every_s", 5)), self.tick)

        @self.on_event(bus.T_LINK_UP)
        def link_up(_topic: str, _env: bus.Envelope) -> None:
            self.client.send(f"HELLO {self.device}\n".encode())
            log.info("greeted the HES device=%s", self.device)

        @self.on("ask")
        def ask(env: bus.Envelope) -> None:
            self.publish("hello.answer", {"asked_by": env.src, "sent": self.sent})

    def tick(self) -> None:
        self.sent += 1
        self.client.send(f"COUNT {self.sent}\n".encode())
