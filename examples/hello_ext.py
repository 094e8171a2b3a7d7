"""An extension: a service of your own beside the gateway's (the README's example).

Configured as ``"EXTENSIONS": {"hello": {"module": "examples.hello_ext",
"settings": {"every_s": 5}}}``, it runs as its own supervisord program. It
greets the HES each time the client's link comes up (and at start if it is
up), sends a count to the HES
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
        self.link_up = False
        self.every(float(settings.get("every_s", 5)), self.tick)

        # link.status is a state topic: the broker sends its last value to a
        # new subscriber, so an extension that starts after the link sees it.
        @self.on_event(bus.T_LINK_STATUS)
        def link(_topic: str, env: bus.Envelope) -> None:
            up = bool(env.data.get("up"))
            if up and not self.link_up:
                self.client.send(f"HELLO {self.device}\n".encode())
                log.info("greeted the HES device=%s", self.device)
            self.link_up = up

        @self.on("ask")
        def ask(env: bus.Envelope) -> None:
            self.publish("hello.answer", {"asked_by": env.src, "sent": self.sent})

    def tick(self) -> None:
        self.sent += 1
        self.client.send(f"COUNT {self.sent}\n".encode())
