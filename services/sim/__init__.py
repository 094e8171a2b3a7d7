"""Simulators and the doubles they share with the tests and the bench.

``meter`` and ``hes`` are the simulator programs (``meterlink run --sim``);
``meter_pty`` (a meter's end of a real pseudo-terminal) and ``fake_hes`` (a
head-end system on a real TCP port) are the doubles; ``dlms`` is the DLMS
both simulators speak.
"""
