"""The ``meterlink`` command: run, check, status, tap, ask, ctl, scale, reload,
supervisor-conf, systemd-unit, schema, version. See ``services.cli.main``."""
