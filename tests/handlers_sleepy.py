"""Test handlers, named in RESOLVER.handlers by the bus tests.

0x2300: sleep a small random time (so workers finish out of order), then
forward the info to the client, as the built-in 0x2100 handler does.
0x2301: always raises, to show a failing handler is counted, not fatal.
"""

import random
import time

from services.resolver import resolver

SLEEPY = 0x2300
BROKEN = 0x2301


@resolver.register(SLEEPY)
def sleepy(app, frame):
    time.sleep(random.random() * 0.001)
    app.client.send(frame.info)


@resolver.register(BROKEN)
def broken(app, frame):
    raise RuntimeError("this handler always fails")


UNENCODABLE = 0x2302


@resolver.register(UNENCODABLE)
def unencodable(app, frame):
    # A handler bug: a Frame object is not bytes and does not encode.
    app.client.send(frame)
    app.client.send(frame.info)
