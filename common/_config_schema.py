# Generated from common.config.SCHEMA by `python -m common.config --generate`.
# Do not edit; a test fails when it no longer matches SCHEMA.
# ruff: noqa
# mypy: ignore-errors
VERSION = "2.22.3"
class Decimal:  # json.loads makes none; see common.config
    pass
class JsonSchemaValueException(ValueError):
    def __init__(self, message, **_):
        super().__init__(message)
        self.message = message


JsonSchemaValuesException = JsonSchemaValueException


NoneType = type(None)

def validate(data, custom_formats={}, name_prefix=None):
    if not isinstance(data, (dict)):
        raise JsonSchemaValueException("" + (name_prefix or "data") + " must be object")
    data_is_dict = isinstance(data, dict)
    if data_is_dict:
        data__missing_keys = set(['UART', 'TCP_SERVER']) - data.keys()
        if data__missing_keys:
            raise JsonSchemaValueException("" + (name_prefix or "data") + " must contain ")
        data_keys = set(data.keys())
        if "UART" in data_keys:
            data_keys.remove("UART")
            data__UART = data["UART"]
            if not isinstance(data__UART, (dict)):
                raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART must be object")
            data__UART_is_dict = isinstance(data__UART, dict)
            if data__UART_is_dict:
                data__UART__missing_keys = set(['port']) - data__UART.keys()
                if data__UART__missing_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART must contain ")
                data__UART_keys = set(data__UART.keys())
                if "port" in data__UART_keys:
                    data__UART_keys.remove("port")
                    data__UART__port = data__UART["port"]
                    if not isinstance(data__UART__port, (str, int)) and not (isinstance(data__UART__port, float) and data__UART__port.is_integer()) or isinstance(data__UART__port, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.port must be string or integer")
                    if isinstance(data__UART__port, str):
                        data__UART__port_len = len(data__UART__port)
                        if data__UART__port_len < 1:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.port must be longer than or equal to 1 characters")
                    if isinstance(data__UART__port, (int, float, Decimal)) and not isinstance(data__UART__port, bool):
                        if data__UART__port < 0:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.port must be bigger than or equal to 0")
                if "port_map" in data__UART_keys:
                    data__UART_keys.remove("port_map")
                    data__UART__portmap = data__UART["port_map"]
                    if not isinstance(data__UART__portmap, (dict)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.port_map must be object")
                    data__UART__portmap_is_dict = isinstance(data__UART__portmap, dict)
                    if data__UART__portmap_is_dict:
                        data__UART__portmap_keys = set(data__UART__portmap.keys())
                        for data__UART__portmap_key in data__UART__portmap_keys:
                            if data__UART__portmap_key not in []:
                                data__UART__portmap_value = data__UART__portmap.get(data__UART__portmap_key)
                                if not isinstance(data__UART__portmap_value, (str)):
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.port_map.{data__UART__portmap_key}".format(**locals()) + " must be string")
                                if isinstance(data__UART__portmap_value, str):
                                    data__UART__portmap_value_len = len(data__UART__portmap_value)
                                    if data__UART__portmap_value_len < 1:
                                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.port_map.{data__UART__portmap_key}".format(**locals()) + " must be longer than or equal to 1 characters")
                if "baudrate" in data__UART_keys:
                    data__UART_keys.remove("baudrate")
                    data__UART__baudrate = data__UART["baudrate"]
                    if not isinstance(data__UART__baudrate, (int)) and not (isinstance(data__UART__baudrate, float) and data__UART__baudrate.is_integer()) or isinstance(data__UART__baudrate, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.baudrate must be integer")
                    if isinstance(data__UART__baudrate, (int, float, Decimal)) and not isinstance(data__UART__baudrate, bool):
                        if data__UART__baudrate < 50:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.baudrate must be bigger than or equal to 50")
                if "bytesize" in data__UART_keys:
                    data__UART_keys.remove("bytesize")
                    data__UART__bytesize = data__UART["bytesize"]
                    if not (isinstance(data__UART__bytesize, (int, float)) and not isinstance(data__UART__bytesize, bool) and data__UART__bytesize == 5 or isinstance(data__UART__bytesize, (int, float)) and not isinstance(data__UART__bytesize, bool) and data__UART__bytesize == 6 or isinstance(data__UART__bytesize, (int, float)) and not isinstance(data__UART__bytesize, bool) and data__UART__bytesize == 7 or isinstance(data__UART__bytesize, (int, float)) and not isinstance(data__UART__bytesize, bool) and data__UART__bytesize == 8):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.bytesize must be one of [5, 6, 7, 8]")
                if "parity" in data__UART_keys:
                    data__UART_keys.remove("parity")
                    data__UART__parity = data__UART["parity"]
                    if not (isinstance(data__UART__parity, (int, float)) and not isinstance(data__UART__parity, bool) and data__UART__parity == 0 or isinstance(data__UART__parity, (int, float)) and not isinstance(data__UART__parity, bool) and data__UART__parity == 1 or isinstance(data__UART__parity, (int, float)) and not isinstance(data__UART__parity, bool) and data__UART__parity == 2 or isinstance(data__UART__parity, (int, float)) and not isinstance(data__UART__parity, bool) and data__UART__parity == 3 or isinstance(data__UART__parity, (int, float)) and not isinstance(data__UART__parity, bool) and data__UART__parity == 4 or isinstance(data__UART__parity, str) and data__UART__parity == 'N' or isinstance(data__UART__parity, str) and data__UART__parity == 'E' or isinstance(data__UART__parity, str) and data__UART__parity == 'O' or isinstance(data__UART__parity, str) and data__UART__parity == 'M' or isinstance(data__UART__parity, str) and data__UART__parity == 'S'):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.parity must be one of [0, 1, 2, 3, 4, 'N', 'E', 'O', 'M', 'S']")
                if "stopbits" in data__UART_keys:
                    data__UART_keys.remove("stopbits")
                    data__UART__stopbits = data__UART["stopbits"]
                    if not (isinstance(data__UART__stopbits, (int, float)) and not isinstance(data__UART__stopbits, bool) and data__UART__stopbits == 1 or isinstance(data__UART__stopbits, (int, float)) and not isinstance(data__UART__stopbits, bool) and data__UART__stopbits == 1.5 or isinstance(data__UART__stopbits, (int, float)) and not isinstance(data__UART__stopbits, bool) and data__UART__stopbits == 2):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.stopbits must be one of [1, 1.5, 2]")
                if "flowctl" in data__UART_keys:
                    data__UART_keys.remove("flowctl")
                    data__UART__flowctl = data__UART["flowctl"]
                    if not (isinstance(data__UART__flowctl, (int, float)) and not isinstance(data__UART__flowctl, bool) and data__UART__flowctl == 0 or isinstance(data__UART__flowctl, (int, float)) and not isinstance(data__UART__flowctl, bool) and data__UART__flowctl == 1):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.flowctl must be one of [0, 1]")
                if "rs485" in data__UART_keys:
                    data__UART_keys.remove("rs485")
                    data__UART__rs485 = data__UART["rs485"]
                    if not isinstance(data__UART__rs485, (bool)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.rs485 must be boolean")
                if "profile" in data__UART_keys:
                    data__UART_keys.remove("profile")
                    data__UART__profile = data__UART["profile"]
                    if not (isinstance(data__UART__profile, str) and data__UART__profile == 'quectel' or isinstance(data__UART__profile, str) and data__UART__profile == 'rfc1662'):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.profile must be one of ['quectel', 'rfc1662']")
                if "accm" in data__UART_keys:
                    data__UART_keys.remove("accm")
                    data__UART__accm = data__UART["accm"]
                    if not isinstance(data__UART__accm, (int)) and not (isinstance(data__UART__accm, float) and data__UART__accm.is_integer()) or isinstance(data__UART__accm, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.accm must be integer")
                    if isinstance(data__UART__accm, (int, float, Decimal)) and not isinstance(data__UART__accm, bool):
                        if data__UART__accm < 0:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.accm must be bigger than or equal to 0")
                        if data__UART__accm > 4294967295:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.accm must be smaller than or equal to 4294967295")
                if "max_info" in data__UART_keys:
                    data__UART_keys.remove("max_info")
                    data__UART__maxinfo = data__UART["max_info"]
                    if not isinstance(data__UART__maxinfo, (int)) and not (isinstance(data__UART__maxinfo, float) and data__UART__maxinfo.is_integer()) or isinstance(data__UART__maxinfo, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.max_info must be integer")
                    if isinstance(data__UART__maxinfo, (int, float, Decimal)) and not isinstance(data__UART__maxinfo, bool):
                        if data__UART__maxinfo < 1:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.max_info must be bigger than or equal to 1")
                        if data__UART__maxinfo > 65534:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.max_info must be smaller than or equal to 65534")
                if "idle_gap_ms" in data__UART_keys:
                    data__UART_keys.remove("idle_gap_ms")
                    data__UART__idlegapms = data__UART["idle_gap_ms"]
                    if not isinstance(data__UART__idlegapms, (int, float, Decimal)) or isinstance(data__UART__idlegapms, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.idle_gap_ms must be number")
                    if isinstance(data__UART__idlegapms, (int, float, Decimal)) and not isinstance(data__UART__idlegapms, bool):
                        if data__UART__idlegapms < 0:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.idle_gap_ms must be bigger than or equal to 0")
                if "reopen_min_s" in data__UART_keys:
                    data__UART_keys.remove("reopen_min_s")
                    data__UART__reopenmins = data__UART["reopen_min_s"]
                    if not isinstance(data__UART__reopenmins, (int, float, Decimal)) or isinstance(data__UART__reopenmins, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.reopen_min_s must be number")
                    if isinstance(data__UART__reopenmins, (int, float, Decimal)) and not isinstance(data__UART__reopenmins, bool):
                        if data__UART__reopenmins < 0:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.reopen_min_s must be bigger than or equal to 0")
                if "reopen_max_s" in data__UART_keys:
                    data__UART_keys.remove("reopen_max_s")
                    data__UART__reopenmaxs = data__UART["reopen_max_s"]
                    if not isinstance(data__UART__reopenmaxs, (int, float, Decimal)) or isinstance(data__UART__reopenmaxs, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.reopen_max_s must be number")
                    if isinstance(data__UART__reopenmaxs, (int, float, Decimal)) and not isinstance(data__UART__reopenmaxs, bool):
                        if data__UART__reopenmaxs < 0:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.reopen_max_s must be bigger than or equal to 0")
                if "journal" in data__UART_keys:
                    data__UART_keys.remove("journal")
                    data__UART__journal = data__UART["journal"]
                    if not isinstance(data__UART__journal, (dict)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.journal must be object")
                    data__UART__journal_is_dict = isinstance(data__UART__journal, dict)
                    if data__UART__journal_is_dict:
                        data__UART__journal__missing_keys = set([]) - data__UART__journal.keys()
                        if data__UART__journal__missing_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.journal must contain ")
                        data__UART__journal_keys = set(data__UART__journal.keys())
                        if "fsync" in data__UART__journal_keys:
                            data__UART__journal_keys.remove("fsync")
                            data__UART__journal__fsync = data__UART__journal["fsync"]
                            if not (isinstance(data__UART__journal__fsync, str) and data__UART__journal__fsync == 'always' or isinstance(data__UART__journal__fsync, str) and data__UART__journal__fsync == 'interval' or isinstance(data__UART__journal__fsync, str) and data__UART__journal__fsync == 'never'):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.journal.fsync must be one of ['always', 'interval', 'never']")
                        if "fsync_interval_s" in data__UART__journal_keys:
                            data__UART__journal_keys.remove("fsync_interval_s")
                            data__UART__journal__fsyncintervals = data__UART__journal["fsync_interval_s"]
                            if not isinstance(data__UART__journal__fsyncintervals, (int, float, Decimal)) or isinstance(data__UART__journal__fsyncintervals, bool):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.journal.fsync_interval_s must be number")
                            if isinstance(data__UART__journal__fsyncintervals, (int, float, Decimal)) and not isinstance(data__UART__journal__fsyncintervals, bool):
                                if data__UART__journal__fsyncintervals < 0.001:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.journal.fsync_interval_s must be bigger than or equal to 0.001")
                        if "max_bytes" in data__UART__journal_keys:
                            data__UART__journal_keys.remove("max_bytes")
                            data__UART__journal__maxbytes = data__UART__journal["max_bytes"]
                            if not isinstance(data__UART__journal__maxbytes, (int)) and not (isinstance(data__UART__journal__maxbytes, float) and data__UART__journal__maxbytes.is_integer()) or isinstance(data__UART__journal__maxbytes, bool):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.journal.max_bytes must be integer")
                            if isinstance(data__UART__journal__maxbytes, (int, float, Decimal)) and not isinstance(data__UART__journal__maxbytes, bool):
                                if data__UART__journal__maxbytes < 65536:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.journal.max_bytes must be bigger than or equal to 65536")
                        if data__UART__journal_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART.journal must not contain "+str(data__UART__journal_keys)+" properties")
                if data__UART_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".UART must not contain "+str(data__UART_keys)+" properties")
        if "TCP_SERVER" in data_keys:
            data_keys.remove("TCP_SERVER")
            data__TCPSERVER = data["TCP_SERVER"]
            if not isinstance(data__TCPSERVER, (dict)):
                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER must be object")
            data__TCPSERVER_is_dict = isinstance(data__TCPSERVER, dict)
            if data__TCPSERVER_is_dict:
                data__TCPSERVER__missing_keys = set(['host', 'port']) - data__TCPSERVER.keys()
                if data__TCPSERVER__missing_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER must contain ")
                data__TCPSERVER_keys = set(data__TCPSERVER.keys())
                if "host" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("host")
                    data__TCPSERVER__host = data__TCPSERVER["host"]
                    if not isinstance(data__TCPSERVER__host, (str)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.host must be string")
                    if isinstance(data__TCPSERVER__host, str):
                        data__TCPSERVER__host_len = len(data__TCPSERVER__host)
                        if data__TCPSERVER__host_len < 1:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.host must be longer than or equal to 1 characters")
                if "port" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("port")
                    data__TCPSERVER__port = data__TCPSERVER["port"]
                    if not isinstance(data__TCPSERVER__port, (int)) and not (isinstance(data__TCPSERVER__port, float) and data__TCPSERVER__port.is_integer()) or isinstance(data__TCPSERVER__port, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.port must be integer")
                    if isinstance(data__TCPSERVER__port, (int, float, Decimal)) and not isinstance(data__TCPSERVER__port, bool):
                        if data__TCPSERVER__port < 1:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.port must be bigger than or equal to 1")
                        if data__TCPSERVER__port > 65535:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.port must be smaller than or equal to 65535")
                if "timeout" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("timeout")
                    data__TCPSERVER__timeout = data__TCPSERVER["timeout"]
                    if not isinstance(data__TCPSERVER__timeout, (int, float, Decimal)) or isinstance(data__TCPSERVER__timeout, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.timeout must be number")
                    if isinstance(data__TCPSERVER__timeout, (int, float, Decimal)) and not isinstance(data__TCPSERVER__timeout, bool):
                        if data__TCPSERVER__timeout < 0:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.timeout must be bigger than or equal to 0")
                if "keep_alive" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("keep_alive")
                    data__TCPSERVER__keepalive = data__TCPSERVER["keep_alive"]
                    if not isinstance(data__TCPSERVER__keepalive, (int)) and not (isinstance(data__TCPSERVER__keepalive, float) and data__TCPSERVER__keepalive.is_integer()) or isinstance(data__TCPSERVER__keepalive, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.keep_alive must be integer")
                    if isinstance(data__TCPSERVER__keepalive, (int, float, Decimal)) and not isinstance(data__TCPSERVER__keepalive, bool):
                        if data__TCPSERVER__keepalive < 0:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.keep_alive must be bigger than or equal to 0")
                if "reconnect_min_s" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("reconnect_min_s")
                    data__TCPSERVER__reconnectmins = data__TCPSERVER["reconnect_min_s"]
                    if not isinstance(data__TCPSERVER__reconnectmins, (int, float, Decimal)) or isinstance(data__TCPSERVER__reconnectmins, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.reconnect_min_s must be number")
                    if isinstance(data__TCPSERVER__reconnectmins, (int, float, Decimal)) and not isinstance(data__TCPSERVER__reconnectmins, bool):
                        if data__TCPSERVER__reconnectmins < 0:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.reconnect_min_s must be bigger than or equal to 0")
                if "reconnect_max_s" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("reconnect_max_s")
                    data__TCPSERVER__reconnectmaxs = data__TCPSERVER["reconnect_max_s"]
                    if not isinstance(data__TCPSERVER__reconnectmaxs, (int, float, Decimal)) or isinstance(data__TCPSERVER__reconnectmaxs, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.reconnect_max_s must be number")
                    if isinstance(data__TCPSERVER__reconnectmaxs, (int, float, Decimal)) and not isinstance(data__TCPSERVER__reconnectmaxs, bool):
                        if data__TCPSERVER__reconnectmaxs < 0:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.reconnect_max_s must be bigger than or equal to 0")
                if "reconnect_slow_after_s" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("reconnect_slow_after_s")
                    data__TCPSERVER__reconnectslowafters = data__TCPSERVER["reconnect_slow_after_s"]
                    if not isinstance(data__TCPSERVER__reconnectslowafters, (int, float, Decimal)) or isinstance(data__TCPSERVER__reconnectslowafters, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.reconnect_slow_after_s must be number")
                    if isinstance(data__TCPSERVER__reconnectslowafters, (int, float, Decimal)) and not isinstance(data__TCPSERVER__reconnectslowafters, bool):
                        if data__TCPSERVER__reconnectslowafters < 0:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.reconnect_slow_after_s must be bigger than or equal to 0")
                if "reconnect_slow_max_s" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("reconnect_slow_max_s")
                    data__TCPSERVER__reconnectslowmaxs = data__TCPSERVER["reconnect_slow_max_s"]
                    if not isinstance(data__TCPSERVER__reconnectslowmaxs, (int, float, Decimal)) or isinstance(data__TCPSERVER__reconnectslowmaxs, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.reconnect_slow_max_s must be number")
                    if isinstance(data__TCPSERVER__reconnectslowmaxs, (int, float, Decimal)) and not isinstance(data__TCPSERVER__reconnectslowmaxs, bool):
                        if data__TCPSERVER__reconnectslowmaxs < 0:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.reconnect_slow_max_s must be bigger than or equal to 0")
                if "resolve_timeout_s" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("resolve_timeout_s")
                    data__TCPSERVER__resolvetimeouts = data__TCPSERVER["resolve_timeout_s"]
                    if not isinstance(data__TCPSERVER__resolvetimeouts, (int, float, Decimal)) or isinstance(data__TCPSERVER__resolvetimeouts, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.resolve_timeout_s must be number")
                    if isinstance(data__TCPSERVER__resolvetimeouts, (int, float, Decimal)) and not isinstance(data__TCPSERVER__resolvetimeouts, bool):
                        if data__TCPSERVER__resolvetimeouts < 0.05:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.resolve_timeout_s must be bigger than or equal to 0.05")
                if "tls" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("tls")
                    data__TCPSERVER__tls = data__TCPSERVER["tls"]
                    if not isinstance(data__TCPSERVER__tls, (dict)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.tls must be object")
                    data__TCPSERVER__tls_is_dict = isinstance(data__TCPSERVER__tls, dict)
                    if data__TCPSERVER__tls_is_dict:
                        data__TCPSERVER__tls__missing_keys = set([]) - data__TCPSERVER__tls.keys()
                        if data__TCPSERVER__tls__missing_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.tls must contain ")
                        data__TCPSERVER__tls_keys = set(data__TCPSERVER__tls.keys())
                        if "enabled" in data__TCPSERVER__tls_keys:
                            data__TCPSERVER__tls_keys.remove("enabled")
                            data__TCPSERVER__tls__enabled = data__TCPSERVER__tls["enabled"]
                            if not isinstance(data__TCPSERVER__tls__enabled, (bool)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.tls.enabled must be boolean")
                        if "ca" in data__TCPSERVER__tls_keys:
                            data__TCPSERVER__tls_keys.remove("ca")
                            data__TCPSERVER__tls__ca = data__TCPSERVER__tls["ca"]
                            if not isinstance(data__TCPSERVER__tls__ca, (str)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.tls.ca must be string")
                        if "cert" in data__TCPSERVER__tls_keys:
                            data__TCPSERVER__tls_keys.remove("cert")
                            data__TCPSERVER__tls__cert = data__TCPSERVER__tls["cert"]
                            if not isinstance(data__TCPSERVER__tls__cert, (str)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.tls.cert must be string")
                        if "key" in data__TCPSERVER__tls_keys:
                            data__TCPSERVER__tls_keys.remove("key")
                            data__TCPSERVER__tls__key = data__TCPSERVER__tls["key"]
                            if not isinstance(data__TCPSERVER__tls__key, (str)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.tls.key must be string")
                        if "verify" in data__TCPSERVER__tls_keys:
                            data__TCPSERVER__tls_keys.remove("verify")
                            data__TCPSERVER__tls__verify = data__TCPSERVER__tls["verify"]
                            if not isinstance(data__TCPSERVER__tls__verify, (bool)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.tls.verify must be boolean")
                        if "server_hostname" in data__TCPSERVER__tls_keys:
                            data__TCPSERVER__tls_keys.remove("server_hostname")
                            data__TCPSERVER__tls__serverhostname = data__TCPSERVER__tls["server_hostname"]
                            if not isinstance(data__TCPSERVER__tls__serverhostname, (str)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.tls.server_hostname must be string")
                        if data__TCPSERVER__tls_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.tls must not contain "+str(data__TCPSERVER__tls_keys)+" properties")
                if "registration" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("registration")
                    data__TCPSERVER__registration = data__TCPSERVER["registration"]
                    if not isinstance(data__TCPSERVER__registration, (dict)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.registration must be object")
                    data__TCPSERVER__registration_is_dict = isinstance(data__TCPSERVER__registration, dict)
                    if data__TCPSERVER__registration_is_dict:
                        data__TCPSERVER__registration__missing_keys = set([]) - data__TCPSERVER__registration.keys()
                        if data__TCPSERVER__registration__missing_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.registration must contain ")
                        data__TCPSERVER__registration_keys = set(data__TCPSERVER__registration.keys())
                        if "payload" in data__TCPSERVER__registration_keys:
                            data__TCPSERVER__registration_keys.remove("payload")
                            data__TCPSERVER__registration__payload = data__TCPSERVER__registration["payload"]
                            if not isinstance(data__TCPSERVER__registration__payload, (str)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.registration.payload must be string")
                        if "format" in data__TCPSERVER__registration_keys:
                            data__TCPSERVER__registration_keys.remove("format")
                            data__TCPSERVER__registration__format = data__TCPSERVER__registration["format"]
                            if not (isinstance(data__TCPSERVER__registration__format, str) and data__TCPSERVER__registration__format == 'hex' or isinstance(data__TCPSERVER__registration__format, str) and data__TCPSERVER__registration__format == 'text'):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.registration.format must be one of ['hex', 'text']")
                        if data__TCPSERVER__registration_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.registration must not contain "+str(data__TCPSERVER__registration_keys)+" properties")
                if "heartbeat" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("heartbeat")
                    data__TCPSERVER__heartbeat = data__TCPSERVER["heartbeat"]
                    if not isinstance(data__TCPSERVER__heartbeat, (dict)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.heartbeat must be object")
                    data__TCPSERVER__heartbeat_is_dict = isinstance(data__TCPSERVER__heartbeat, dict)
                    if data__TCPSERVER__heartbeat_is_dict:
                        data__TCPSERVER__heartbeat__missing_keys = set([]) - data__TCPSERVER__heartbeat.keys()
                        if data__TCPSERVER__heartbeat__missing_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.heartbeat must contain ")
                        data__TCPSERVER__heartbeat_keys = set(data__TCPSERVER__heartbeat.keys())
                        if "interval_s" in data__TCPSERVER__heartbeat_keys:
                            data__TCPSERVER__heartbeat_keys.remove("interval_s")
                            data__TCPSERVER__heartbeat__intervals = data__TCPSERVER__heartbeat["interval_s"]
                            if not isinstance(data__TCPSERVER__heartbeat__intervals, (int, float, Decimal)) or isinstance(data__TCPSERVER__heartbeat__intervals, bool):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.heartbeat.interval_s must be number")
                            if isinstance(data__TCPSERVER__heartbeat__intervals, (int, float, Decimal)) and not isinstance(data__TCPSERVER__heartbeat__intervals, bool):
                                if data__TCPSERVER__heartbeat__intervals < 0:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.heartbeat.interval_s must be bigger than or equal to 0")
                        if "payload" in data__TCPSERVER__heartbeat_keys:
                            data__TCPSERVER__heartbeat_keys.remove("payload")
                            data__TCPSERVER__heartbeat__payload = data__TCPSERVER__heartbeat["payload"]
                            if not isinstance(data__TCPSERVER__heartbeat__payload, (str)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.heartbeat.payload must be string")
                        if "format" in data__TCPSERVER__heartbeat_keys:
                            data__TCPSERVER__heartbeat_keys.remove("format")
                            data__TCPSERVER__heartbeat__format = data__TCPSERVER__heartbeat["format"]
                            if not (isinstance(data__TCPSERVER__heartbeat__format, str) and data__TCPSERVER__heartbeat__format == 'hex' or isinstance(data__TCPSERVER__heartbeat__format, str) and data__TCPSERVER__heartbeat__format == 'text'):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.heartbeat.format must be one of ['hex', 'text']")
                        if data__TCPSERVER__heartbeat_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.heartbeat must not contain "+str(data__TCPSERVER__heartbeat_keys)+" properties")
                if "spool" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("spool")
                    data__TCPSERVER__spool = data__TCPSERVER["spool"]
                    if not isinstance(data__TCPSERVER__spool, (dict)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.spool must be object")
                    data__TCPSERVER__spool_is_dict = isinstance(data__TCPSERVER__spool, dict)
                    if data__TCPSERVER__spool_is_dict:
                        data__TCPSERVER__spool__missing_keys = set([]) - data__TCPSERVER__spool.keys()
                        if data__TCPSERVER__spool__missing_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.spool must contain ")
                        data__TCPSERVER__spool_keys = set(data__TCPSERVER__spool.keys())
                        if "max_bytes" in data__TCPSERVER__spool_keys:
                            data__TCPSERVER__spool_keys.remove("max_bytes")
                            data__TCPSERVER__spool__maxbytes = data__TCPSERVER__spool["max_bytes"]
                            if not isinstance(data__TCPSERVER__spool__maxbytes, (int)) and not (isinstance(data__TCPSERVER__spool__maxbytes, float) and data__TCPSERVER__spool__maxbytes.is_integer()) or isinstance(data__TCPSERVER__spool__maxbytes, bool):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.spool.max_bytes must be integer")
                            if isinstance(data__TCPSERVER__spool__maxbytes, (int, float, Decimal)) and not isinstance(data__TCPSERVER__spool__maxbytes, bool):
                                if data__TCPSERVER__spool__maxbytes < 1024:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.spool.max_bytes must be bigger than or equal to 1024")
                        if "max_age_s" in data__TCPSERVER__spool_keys:
                            data__TCPSERVER__spool_keys.remove("max_age_s")
                            data__TCPSERVER__spool__maxages = data__TCPSERVER__spool["max_age_s"]
                            if not isinstance(data__TCPSERVER__spool__maxages, (int, float, Decimal)) or isinstance(data__TCPSERVER__spool__maxages, bool):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.spool.max_age_s must be number")
                            if isinstance(data__TCPSERVER__spool__maxages, (int, float, Decimal)) and not isinstance(data__TCPSERVER__spool__maxages, bool):
                                if data__TCPSERVER__spool__maxages < 1:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.spool.max_age_s must be bigger than or equal to 1")
                        if "policy" in data__TCPSERVER__spool_keys:
                            data__TCPSERVER__spool_keys.remove("policy")
                            data__TCPSERVER__spool__policy = data__TCPSERVER__spool["policy"]
                            if not (isinstance(data__TCPSERVER__spool__policy, str) and data__TCPSERVER__spool__policy == 'all' or isinstance(data__TCPSERVER__spool__policy, str) and data__TCPSERVER__spool__policy == 'pushes'):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.spool.policy must be one of ['all', 'pushes']")
                        if data__TCPSERVER__spool_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.spool must not contain "+str(data__TCPSERVER__spool_keys)+" properties")
                if "framing" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("framing")
                    data__TCPSERVER__framing = data__TCPSERVER["framing"]
                    if not (isinstance(data__TCPSERVER__framing, str) and data__TCPSERVER__framing == 'raw' or isinstance(data__TCPSERVER__framing, str) and data__TCPSERVER__framing == 'wrapper'):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.framing must be one of ['raw', 'wrapper']")
                if "wrapper" in data__TCPSERVER_keys:
                    data__TCPSERVER_keys.remove("wrapper")
                    data__TCPSERVER__wrapper = data__TCPSERVER["wrapper"]
                    if not isinstance(data__TCPSERVER__wrapper, (dict)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.wrapper must be object")
                    data__TCPSERVER__wrapper_is_dict = isinstance(data__TCPSERVER__wrapper, dict)
                    if data__TCPSERVER__wrapper_is_dict:
                        data__TCPSERVER__wrapper__missing_keys = set([]) - data__TCPSERVER__wrapper.keys()
                        if data__TCPSERVER__wrapper__missing_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.wrapper must contain ")
                        data__TCPSERVER__wrapper_keys = set(data__TCPSERVER__wrapper.keys())
                        if "source_wport" in data__TCPSERVER__wrapper_keys:
                            data__TCPSERVER__wrapper_keys.remove("source_wport")
                            data__TCPSERVER__wrapper__sourcewport = data__TCPSERVER__wrapper["source_wport"]
                            if not isinstance(data__TCPSERVER__wrapper__sourcewport, (int)) and not (isinstance(data__TCPSERVER__wrapper__sourcewport, float) and data__TCPSERVER__wrapper__sourcewport.is_integer()) or isinstance(data__TCPSERVER__wrapper__sourcewport, bool):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.wrapper.source_wport must be integer")
                            if isinstance(data__TCPSERVER__wrapper__sourcewport, (int, float, Decimal)) and not isinstance(data__TCPSERVER__wrapper__sourcewport, bool):
                                if data__TCPSERVER__wrapper__sourcewport < 0:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.wrapper.source_wport must be bigger than or equal to 0")
                                if data__TCPSERVER__wrapper__sourcewport > 65535:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.wrapper.source_wport must be smaller than or equal to 65535")
                        if "destination_wport" in data__TCPSERVER__wrapper_keys:
                            data__TCPSERVER__wrapper_keys.remove("destination_wport")
                            data__TCPSERVER__wrapper__destinationwport = data__TCPSERVER__wrapper["destination_wport"]
                            if not isinstance(data__TCPSERVER__wrapper__destinationwport, (int)) and not (isinstance(data__TCPSERVER__wrapper__destinationwport, float) and data__TCPSERVER__wrapper__destinationwport.is_integer()) or isinstance(data__TCPSERVER__wrapper__destinationwport, bool):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.wrapper.destination_wport must be integer")
                            if isinstance(data__TCPSERVER__wrapper__destinationwport, (int, float, Decimal)) and not isinstance(data__TCPSERVER__wrapper__destinationwport, bool):
                                if data__TCPSERVER__wrapper__destinationwport < 0:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.wrapper.destination_wport must be bigger than or equal to 0")
                                if data__TCPSERVER__wrapper__destinationwport > 65535:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.wrapper.destination_wport must be smaller than or equal to 65535")
                        if data__TCPSERVER__wrapper_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER.wrapper must not contain "+str(data__TCPSERVER__wrapper_keys)+" properties")
                if data__TCPSERVER_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".TCP_SERVER must not contain "+str(data__TCPSERVER_keys)+" properties")
        if "DEVICE" in data_keys:
            data_keys.remove("DEVICE")
            data__DEVICE = data["DEVICE"]
            if not isinstance(data__DEVICE, (dict)):
                raise JsonSchemaValueException("" + (name_prefix or "data") + ".DEVICE must be object")
            data__DEVICE_is_dict = isinstance(data__DEVICE, dict)
            if data__DEVICE_is_dict:
                data__DEVICE__missing_keys = set([]) - data__DEVICE.keys()
                if data__DEVICE__missing_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".DEVICE must contain ")
                data__DEVICE_keys = set(data__DEVICE.keys())
                if "name" in data__DEVICE_keys:
                    data__DEVICE_keys.remove("name")
                    data__DEVICE__name = data__DEVICE["name"]
                    if not isinstance(data__DEVICE__name, (str)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".DEVICE.name must be string")
                if "meter_sn" in data__DEVICE_keys:
                    data__DEVICE_keys.remove("meter_sn")
                    data__DEVICE__metersn = data__DEVICE["meter_sn"]
                    if not isinstance(data__DEVICE__metersn, (str)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".DEVICE.meter_sn must be string")
                if "writable" in data__DEVICE_keys:
                    data__DEVICE_keys.remove("writable")
                    data__DEVICE__writable = data__DEVICE["writable"]
                    if not isinstance(data__DEVICE__writable, (list, tuple)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".DEVICE.writable must be array")
                    data__DEVICE__writable_is_list = isinstance(data__DEVICE__writable, (list, tuple))
                    if data__DEVICE__writable_is_list:
                        data__DEVICE__writable_len = len(data__DEVICE__writable)
                        for data__DEVICE__writable_x, data__DEVICE__writable_item in enumerate(data__DEVICE__writable):
                            if not isinstance(data__DEVICE__writable_item, (int)) and not (isinstance(data__DEVICE__writable_item, float) and data__DEVICE__writable_item.is_integer()) or isinstance(data__DEVICE__writable_item, bool):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".DEVICE.writable[{data__DEVICE__writable_x}]".format(**locals()) + " must be integer")
                            if isinstance(data__DEVICE__writable_item, (int, float, Decimal)) and not isinstance(data__DEVICE__writable_item, bool):
                                if data__DEVICE__writable_item < 0:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".DEVICE.writable[{data__DEVICE__writable_x}]".format(**locals()) + " must be bigger than or equal to 0")
                                if data__DEVICE__writable_item > 65535:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".DEVICE.writable[{data__DEVICE__writable_x}]".format(**locals()) + " must be smaller than or equal to 65535")
                if data__DEVICE_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".DEVICE must not contain "+str(data__DEVICE_keys)+" properties")
        if "RESOLVER" in data_keys:
            data_keys.remove("RESOLVER")
            data__RESOLVER = data["RESOLVER"]
            if not isinstance(data__RESOLVER, (dict)):
                raise JsonSchemaValueException("" + (name_prefix or "data") + ".RESOLVER must be object")
            data__RESOLVER_is_dict = isinstance(data__RESOLVER, dict)
            if data__RESOLVER_is_dict:
                data__RESOLVER__missing_keys = set([]) - data__RESOLVER.keys()
                if data__RESOLVER__missing_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".RESOLVER must contain ")
                data__RESOLVER_keys = set(data__RESOLVER.keys())
                if "handlers" in data__RESOLVER_keys:
                    data__RESOLVER_keys.remove("handlers")
                    data__RESOLVER__handlers = data__RESOLVER["handlers"]
                    if not isinstance(data__RESOLVER__handlers, (list, tuple)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".RESOLVER.handlers must be array")
                    data__RESOLVER__handlers_is_list = isinstance(data__RESOLVER__handlers, (list, tuple))
                    if data__RESOLVER__handlers_is_list:
                        data__RESOLVER__handlers_len = len(data__RESOLVER__handlers)
                        for data__RESOLVER__handlers_x, data__RESOLVER__handlers_item in enumerate(data__RESOLVER__handlers):
                            if not isinstance(data__RESOLVER__handlers_item, (str)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".RESOLVER.handlers[{data__RESOLVER__handlers_x}]".format(**locals()) + " must be string")
                if "prefetch" in data__RESOLVER_keys:
                    data__RESOLVER_keys.remove("prefetch")
                    data__RESOLVER__prefetch = data__RESOLVER["prefetch"]
                    if not isinstance(data__RESOLVER__prefetch, (int)) and not (isinstance(data__RESOLVER__prefetch, float) and data__RESOLVER__prefetch.is_integer()) or isinstance(data__RESOLVER__prefetch, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".RESOLVER.prefetch must be integer")
                    if isinstance(data__RESOLVER__prefetch, (int, float, Decimal)) and not isinstance(data__RESOLVER__prefetch, bool):
                        if data__RESOLVER__prefetch < 1:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".RESOLVER.prefetch must be bigger than or equal to 1")
                if data__RESOLVER_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".RESOLVER must not contain "+str(data__RESOLVER_keys)+" properties")
        if "WATCHDOG" in data_keys:
            data_keys.remove("WATCHDOG")
            data__WATCHDOG = data["WATCHDOG"]
            if not isinstance(data__WATCHDOG, (dict)):
                raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG must be object")
            data__WATCHDOG_is_dict = isinstance(data__WATCHDOG, dict)
            if data__WATCHDOG_is_dict:
                data__WATCHDOG__missing_keys = set([]) - data__WATCHDOG.keys()
                if data__WATCHDOG__missing_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG must contain ")
                data__WATCHDOG_keys = set(data__WATCHDOG.keys())
                if "interval_s" in data__WATCHDOG_keys:
                    data__WATCHDOG_keys.remove("interval_s")
                    data__WATCHDOG__intervals = data__WATCHDOG["interval_s"]
                    if not isinstance(data__WATCHDOG__intervals, (int, float, Decimal)) or isinstance(data__WATCHDOG__intervals, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.interval_s must be number")
                    if isinstance(data__WATCHDOG__intervals, (int, float, Decimal)) and not isinstance(data__WATCHDOG__intervals, bool):
                        if data__WATCHDOG__intervals < 0.05:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.interval_s must be bigger than or equal to 0.05")
                if "timeout_s" in data__WATCHDOG_keys:
                    data__WATCHDOG_keys.remove("timeout_s")
                    data__WATCHDOG__timeouts = data__WATCHDOG["timeout_s"]
                    if not isinstance(data__WATCHDOG__timeouts, (int, float, Decimal)) or isinstance(data__WATCHDOG__timeouts, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.timeout_s must be number")
                    if isinstance(data__WATCHDOG__timeouts, (int, float, Decimal)) and not isinstance(data__WATCHDOG__timeouts, bool):
                        if data__WATCHDOG__timeouts < 0.01:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.timeout_s must be bigger than or equal to 0.01")
                if "targets" in data__WATCHDOG_keys:
                    data__WATCHDOG_keys.remove("targets")
                    data__WATCHDOG__targets = data__WATCHDOG["targets"]
                    if not isinstance(data__WATCHDOG__targets, (list, tuple)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.targets must be array")
                    data__WATCHDOG__targets_is_list = isinstance(data__WATCHDOG__targets, (list, tuple))
                    if data__WATCHDOG__targets_is_list:
                        data__WATCHDOG__targets_len = len(data__WATCHDOG__targets)
                        for data__WATCHDOG__targets_x, data__WATCHDOG__targets_item in enumerate(data__WATCHDOG__targets):
                            if not isinstance(data__WATCHDOG__targets_item, (list, tuple)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.targets[{data__WATCHDOG__targets_x}]".format(**locals()) + " must be array")
                            data__WATCHDOG__targets_item_is_list = isinstance(data__WATCHDOG__targets_item, (list, tuple))
                            if data__WATCHDOG__targets_item_is_list:
                                data__WATCHDOG__targets_item_len = len(data__WATCHDOG__targets_item)
                                if data__WATCHDOG__targets_item_len < 2:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.targets[{data__WATCHDOG__targets_x}]".format(**locals()) + " must contain at least 2 items")
                                if data__WATCHDOG__targets_item_len > 2:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.targets[{data__WATCHDOG__targets_x}]".format(**locals()) + " must contain less than or equal to 2 items")
                                if data__WATCHDOG__targets_item_len > 0:
                                    data__WATCHDOG__targets_item__0 = data__WATCHDOG__targets_item[0]
                                    if not isinstance(data__WATCHDOG__targets_item__0, (str)):
                                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.targets[{data__WATCHDOG__targets_x}][0]".format(**locals()) + " must be string")
                                    if isinstance(data__WATCHDOG__targets_item__0, str):
                                        data__WATCHDOG__targets_item__0_len = len(data__WATCHDOG__targets_item__0)
                                        if data__WATCHDOG__targets_item__0_len < 1:
                                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.targets[{data__WATCHDOG__targets_x}][0]".format(**locals()) + " must be longer than or equal to 1 characters")
                                if data__WATCHDOG__targets_item_len > 1:
                                    data__WATCHDOG__targets_item__1 = data__WATCHDOG__targets_item[1]
                                    if not isinstance(data__WATCHDOG__targets_item__1, (int)) and not (isinstance(data__WATCHDOG__targets_item__1, float) and data__WATCHDOG__targets_item__1.is_integer()) or isinstance(data__WATCHDOG__targets_item__1, bool):
                                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.targets[{data__WATCHDOG__targets_x}][1]".format(**locals()) + " must be integer")
                                    if isinstance(data__WATCHDOG__targets_item__1, (int, float, Decimal)) and not isinstance(data__WATCHDOG__targets_item__1, bool):
                                        if data__WATCHDOG__targets_item__1 < 1:
                                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.targets[{data__WATCHDOG__targets_x}][1]".format(**locals()) + " must be bigger than or equal to 1")
                                        if data__WATCHDOG__targets_item__1 > 65535:
                                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.targets[{data__WATCHDOG__targets_x}][1]".format(**locals()) + " must be smaller than or equal to 65535")
                if "radio_cycle_after" in data__WATCHDOG_keys:
                    data__WATCHDOG_keys.remove("radio_cycle_after")
                    data__WATCHDOG__radiocycleafter = data__WATCHDOG["radio_cycle_after"]
                    if not isinstance(data__WATCHDOG__radiocycleafter, (int)) and not (isinstance(data__WATCHDOG__radiocycleafter, float) and data__WATCHDOG__radiocycleafter.is_integer()) or isinstance(data__WATCHDOG__radiocycleafter, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.radio_cycle_after must be integer")
                    if isinstance(data__WATCHDOG__radiocycleafter, (int, float, Decimal)) and not isinstance(data__WATCHDOG__radiocycleafter, bool):
                        if data__WATCHDOG__radiocycleafter < 1:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.radio_cycle_after must be bigger than or equal to 1")
                if "reboot_after" in data__WATCHDOG_keys:
                    data__WATCHDOG_keys.remove("reboot_after")
                    data__WATCHDOG__rebootafter = data__WATCHDOG["reboot_after"]
                    if not isinstance(data__WATCHDOG__rebootafter, (int)) and not (isinstance(data__WATCHDOG__rebootafter, float) and data__WATCHDOG__rebootafter.is_integer()) or isinstance(data__WATCHDOG__rebootafter, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.reboot_after must be integer")
                    if isinstance(data__WATCHDOG__rebootafter, (int, float, Decimal)) and not isinstance(data__WATCHDOG__rebootafter, bool):
                        if data__WATCHDOG__rebootafter < 1:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.reboot_after must be bigger than or equal to 1")
                if "radio_cycle_cmd" in data__WATCHDOG_keys:
                    data__WATCHDOG_keys.remove("radio_cycle_cmd")
                    data__WATCHDOG__radiocyclecmd = data__WATCHDOG["radio_cycle_cmd"]
                    if not isinstance(data__WATCHDOG__radiocyclecmd, (list, tuple)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.radio_cycle_cmd must be array")
                    data__WATCHDOG__radiocyclecmd_is_list = isinstance(data__WATCHDOG__radiocyclecmd, (list, tuple))
                    if data__WATCHDOG__radiocyclecmd_is_list:
                        data__WATCHDOG__radiocyclecmd_len = len(data__WATCHDOG__radiocyclecmd)
                        for data__WATCHDOG__radiocyclecmd_x, data__WATCHDOG__radiocyclecmd_item in enumerate(data__WATCHDOG__radiocyclecmd):
                            if not isinstance(data__WATCHDOG__radiocyclecmd_item, (str)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.radio_cycle_cmd[{data__WATCHDOG__radiocyclecmd_x}]".format(**locals()) + " must be string")
                if "reboot_cmd" in data__WATCHDOG_keys:
                    data__WATCHDOG_keys.remove("reboot_cmd")
                    data__WATCHDOG__rebootcmd = data__WATCHDOG["reboot_cmd"]
                    if not isinstance(data__WATCHDOG__rebootcmd, (list, tuple)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.reboot_cmd must be array")
                    data__WATCHDOG__rebootcmd_is_list = isinstance(data__WATCHDOG__rebootcmd, (list, tuple))
                    if data__WATCHDOG__rebootcmd_is_list:
                        data__WATCHDOG__rebootcmd_len = len(data__WATCHDOG__rebootcmd)
                        for data__WATCHDOG__rebootcmd_x, data__WATCHDOG__rebootcmd_item in enumerate(data__WATCHDOG__rebootcmd):
                            if not isinstance(data__WATCHDOG__rebootcmd_item, (str)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.reboot_cmd[{data__WATCHDOG__rebootcmd_x}]".format(**locals()) + " must be string")
                if "status_interval_s" in data__WATCHDOG_keys:
                    data__WATCHDOG_keys.remove("status_interval_s")
                    data__WATCHDOG__statusintervals = data__WATCHDOG["status_interval_s"]
                    if not isinstance(data__WATCHDOG__statusintervals, (int, float, Decimal)) or isinstance(data__WATCHDOG__statusintervals, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.status_interval_s must be number")
                    if isinstance(data__WATCHDOG__statusintervals, (int, float, Decimal)) and not isinstance(data__WATCHDOG__statusintervals, bool):
                        if data__WATCHDOG__statusintervals < 0.05:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.status_interval_s must be bigger than or equal to 0.05")
                if "command_timeout_s" in data__WATCHDOG_keys:
                    data__WATCHDOG_keys.remove("command_timeout_s")
                    data__WATCHDOG__commandtimeouts = data__WATCHDOG["command_timeout_s"]
                    if not isinstance(data__WATCHDOG__commandtimeouts, (int, float, Decimal)) or isinstance(data__WATCHDOG__commandtimeouts, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.command_timeout_s must be number")
                    if isinstance(data__WATCHDOG__commandtimeouts, (int, float, Decimal)) and not isinstance(data__WATCHDOG__commandtimeouts, bool):
                        if data__WATCHDOG__commandtimeouts < 0.1:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.command_timeout_s must be bigger than or equal to 0.1")
                if "ladder_backoff_max" in data__WATCHDOG_keys:
                    data__WATCHDOG_keys.remove("ladder_backoff_max")
                    data__WATCHDOG__ladderbackoffmax = data__WATCHDOG["ladder_backoff_max"]
                    if not isinstance(data__WATCHDOG__ladderbackoffmax, (int)) and not (isinstance(data__WATCHDOG__ladderbackoffmax, float) and data__WATCHDOG__ladderbackoffmax.is_integer()) or isinstance(data__WATCHDOG__ladderbackoffmax, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.ladder_backoff_max must be integer")
                    if isinstance(data__WATCHDOG__ladderbackoffmax, (int, float, Decimal)) and not isinstance(data__WATCHDOG__ladderbackoffmax, bool):
                        if data__WATCHDOG__ladderbackoffmax < 1:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.ladder_backoff_max must be bigger than or equal to 1")
                if "lqi" in data__WATCHDOG_keys:
                    data__WATCHDOG_keys.remove("lqi")
                    data__WATCHDOG__lqi = data__WATCHDOG["lqi"]
                    if not isinstance(data__WATCHDOG__lqi, (dict)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi must be object")
                    data__WATCHDOG__lqi_is_dict = isinstance(data__WATCHDOG__lqi, dict)
                    if data__WATCHDOG__lqi_is_dict:
                        data__WATCHDOG__lqi__missing_keys = set([]) - data__WATCHDOG__lqi.keys()
                        if data__WATCHDOG__lqi__missing_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi must contain ")
                        data__WATCHDOG__lqi_keys = set(data__WATCHDOG__lqi.keys())
                        if "source" in data__WATCHDOG__lqi_keys:
                            data__WATCHDOG__lqi_keys.remove("source")
                            data__WATCHDOG__lqi__source = data__WATCHDOG__lqi["source"]
                            if not (isinstance(data__WATCHDOG__lqi__source, str) and data__WATCHDOG__lqi__source == 'fixed' or isinstance(data__WATCHDOG__lqi__source, str) and data__WATCHDOG__lqi__source == 'command' or isinstance(data__WATCHDOG__lqi__source, str) and data__WATCHDOG__lqi__source == 'at'):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi.source must be one of ['fixed', 'command', 'at']")
                        if "value" in data__WATCHDOG__lqi_keys:
                            data__WATCHDOG__lqi_keys.remove("value")
                            data__WATCHDOG__lqi__value = data__WATCHDOG__lqi["value"]
                            if not isinstance(data__WATCHDOG__lqi__value, (int)) and not (isinstance(data__WATCHDOG__lqi__value, float) and data__WATCHDOG__lqi__value.is_integer()) or isinstance(data__WATCHDOG__lqi__value, bool):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi.value must be integer")
                            if isinstance(data__WATCHDOG__lqi__value, (int, float, Decimal)) and not isinstance(data__WATCHDOG__lqi__value, bool):
                                if data__WATCHDOG__lqi__value < 0:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi.value must be bigger than or equal to 0")
                                if data__WATCHDOG__lqi__value > 255:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi.value must be smaller than or equal to 255")
                        if "command" in data__WATCHDOG__lqi_keys:
                            data__WATCHDOG__lqi_keys.remove("command")
                            data__WATCHDOG__lqi__command = data__WATCHDOG__lqi["command"]
                            if not isinstance(data__WATCHDOG__lqi__command, (list, tuple)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi.command must be array")
                            data__WATCHDOG__lqi__command_is_list = isinstance(data__WATCHDOG__lqi__command, (list, tuple))
                            if data__WATCHDOG__lqi__command_is_list:
                                data__WATCHDOG__lqi__command_len = len(data__WATCHDOG__lqi__command)
                                for data__WATCHDOG__lqi__command_x, data__WATCHDOG__lqi__command_item in enumerate(data__WATCHDOG__lqi__command):
                                    if not isinstance(data__WATCHDOG__lqi__command_item, (str)):
                                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi.command[{data__WATCHDOG__lqi__command_x}]".format(**locals()) + " must be string")
                        if "pattern" in data__WATCHDOG__lqi_keys:
                            data__WATCHDOG__lqi_keys.remove("pattern")
                            data__WATCHDOG__lqi__pattern = data__WATCHDOG__lqi["pattern"]
                            if not isinstance(data__WATCHDOG__lqi__pattern, (str)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi.pattern must be string")
                        if "at_port" in data__WATCHDOG__lqi_keys:
                            data__WATCHDOG__lqi_keys.remove("at_port")
                            data__WATCHDOG__lqi__atport = data__WATCHDOG__lqi["at_port"]
                            if not isinstance(data__WATCHDOG__lqi__atport, (str)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi.at_port must be string")
                        if "at_baudrate" in data__WATCHDOG__lqi_keys:
                            data__WATCHDOG__lqi_keys.remove("at_baudrate")
                            data__WATCHDOG__lqi__atbaudrate = data__WATCHDOG__lqi["at_baudrate"]
                            if not isinstance(data__WATCHDOG__lqi__atbaudrate, (int)) and not (isinstance(data__WATCHDOG__lqi__atbaudrate, float) and data__WATCHDOG__lqi__atbaudrate.is_integer()) or isinstance(data__WATCHDOG__lqi__atbaudrate, bool):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi.at_baudrate must be integer")
                            if isinstance(data__WATCHDOG__lqi__atbaudrate, (int, float, Decimal)) and not isinstance(data__WATCHDOG__lqi__atbaudrate, bool):
                                if data__WATCHDOG__lqi__atbaudrate < 50:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi.at_baudrate must be bigger than or equal to 50")
                        if "timeout_s" in data__WATCHDOG__lqi_keys:
                            data__WATCHDOG__lqi_keys.remove("timeout_s")
                            data__WATCHDOG__lqi__timeouts = data__WATCHDOG__lqi["timeout_s"]
                            if not isinstance(data__WATCHDOG__lqi__timeouts, (int, float, Decimal)) or isinstance(data__WATCHDOG__lqi__timeouts, bool):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi.timeout_s must be number")
                            if isinstance(data__WATCHDOG__lqi__timeouts, (int, float, Decimal)) and not isinstance(data__WATCHDOG__lqi__timeouts, bool):
                                if data__WATCHDOG__lqi__timeouts < 0.05:
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi.timeout_s must be bigger than or equal to 0.05")
                        if data__WATCHDOG__lqi_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG.lqi must not contain "+str(data__WATCHDOG__lqi_keys)+" properties")
                if data__WATCHDOG_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".WATCHDOG must not contain "+str(data__WATCHDOG_keys)+" properties")
        if "BUS" in data_keys:
            data_keys.remove("BUS")
            data__BUS = data["BUS"]
            if not isinstance(data__BUS, (dict)):
                raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS must be object")
            data__BUS_is_dict = isinstance(data__BUS, dict)
            if data__BUS_is_dict:
                data__BUS__missing_keys = set([]) - data__BUS.keys()
                if data__BUS__missing_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS must contain ")
                data__BUS_keys = set(data__BUS.keys())
                if "transport" in data__BUS_keys:
                    data__BUS_keys.remove("transport")
                    data__BUS__transport = data__BUS["transport"]
                    if not (isinstance(data__BUS__transport, str) and data__BUS__transport == 'ipc' or isinstance(data__BUS__transport, str) and data__BUS__transport == 'tcp'):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS.transport must be one of ['ipc', 'tcp']")
                if "host" in data__BUS_keys:
                    data__BUS_keys.remove("host")
                    data__BUS__host = data__BUS["host"]
                    if not isinstance(data__BUS__host, (str)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS.host must be string")
                if "base_port" in data__BUS_keys:
                    data__BUS_keys.remove("base_port")
                    data__BUS__baseport = data__BUS["base_port"]
                    if not isinstance(data__BUS__baseport, (int)) and not (isinstance(data__BUS__baseport, float) and data__BUS__baseport.is_integer()) or isinstance(data__BUS__baseport, bool):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS.base_port must be integer")
                    if isinstance(data__BUS__baseport, (int, float, Decimal)) and not isinstance(data__BUS__baseport, bool):
                        if data__BUS__baseport < 1:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS.base_port must be bigger than or equal to 1")
                        if data__BUS__baseport > 65000:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS.base_port must be smaller than or equal to 65000")
                if "services" in data__BUS_keys:
                    data__BUS_keys.remove("services")
                    data__BUS__services = data__BUS["services"]
                    if not isinstance(data__BUS__services, (list, tuple)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS.services must be array")
                    data__BUS__services_is_list = isinstance(data__BUS__services, (list, tuple))
                    if data__BUS__services_is_list:
                        data__BUS__services_len = len(data__BUS__services)
                        for data__BUS__services_x, data__BUS__services_item in enumerate(data__BUS__services):
                            if not isinstance(data__BUS__services_item, (str)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS.services[{data__BUS__services_x}]".format(**locals()) + " must be string")
                if "curve" in data__BUS_keys:
                    data__BUS_keys.remove("curve")
                    data__BUS__curve = data__BUS["curve"]
                    if not isinstance(data__BUS__curve, (dict)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS.curve must be object")
                    data__BUS__curve_is_dict = isinstance(data__BUS__curve, dict)
                    if data__BUS__curve_is_dict:
                        data__BUS__curve__missing_keys = set([]) - data__BUS__curve.keys()
                        if data__BUS__curve__missing_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS.curve must contain ")
                        data__BUS__curve_keys = set(data__BUS__curve.keys())
                        if "enabled" in data__BUS__curve_keys:
                            data__BUS__curve_keys.remove("enabled")
                            data__BUS__curve__enabled = data__BUS__curve["enabled"]
                            if not isinstance(data__BUS__curve__enabled, (bool)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS.curve.enabled must be boolean")
                        if "keys_dir" in data__BUS__curve_keys:
                            data__BUS__curve_keys.remove("keys_dir")
                            data__BUS__curve__keysdir = data__BUS__curve["keys_dir"]
                            if not isinstance(data__BUS__curve__keysdir, (str)):
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS.curve.keys_dir must be string")
                        if data__BUS__curve_keys:
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS.curve must not contain "+str(data__BUS__curve_keys)+" properties")
                if data__BUS_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".BUS must not contain "+str(data__BUS_keys)+" properties")
        if "METRICS" in data_keys:
            data_keys.remove("METRICS")
            data__METRICS = data["METRICS"]
            if not isinstance(data__METRICS, (dict)):
                raise JsonSchemaValueException("" + (name_prefix or "data") + ".METRICS must be object")
            data__METRICS_is_dict = isinstance(data__METRICS, dict)
            if data__METRICS_is_dict:
                data__METRICS__missing_keys = set([]) - data__METRICS.keys()
                if data__METRICS__missing_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".METRICS must contain ")
                data__METRICS_keys = set(data__METRICS.keys())
                if "listen" in data__METRICS_keys:
                    data__METRICS_keys.remove("listen")
                    data__METRICS__listen = data__METRICS["listen"]
                    if not isinstance(data__METRICS__listen, (str)):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".METRICS.listen must be string")
                if data__METRICS_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".METRICS must not contain "+str(data__METRICS_keys)+" properties")
        if "LOG" in data_keys:
            data_keys.remove("LOG")
            data__LOG = data["LOG"]
            if not isinstance(data__LOG, (dict)):
                raise JsonSchemaValueException("" + (name_prefix or "data") + ".LOG must be object")
            data__LOG_is_dict = isinstance(data__LOG, dict)
            if data__LOG_is_dict:
                data__LOG__missing_keys = set([]) - data__LOG.keys()
                if data__LOG__missing_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".LOG must contain ")
                data__LOG_keys = set(data__LOG.keys())
                if "level" in data__LOG_keys:
                    data__LOG_keys.remove("level")
                    data__LOG__level = data__LOG["level"]
                    if not (isinstance(data__LOG__level, str) and data__LOG__level == 'DEBUG' or isinstance(data__LOG__level, str) and data__LOG__level == 'INFO' or isinstance(data__LOG__level, str) and data__LOG__level == 'WARNING' or isinstance(data__LOG__level, str) and data__LOG__level == 'ERROR'):
                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".LOG.level must be one of ['DEBUG', 'INFO', 'WARNING', 'ERROR']")
                if data__LOG_keys:
                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".LOG must not contain "+str(data__LOG_keys)+" properties")
        if "EXTENSIONS" in data_keys:
            data_keys.remove("EXTENSIONS")
            data__EXTENSIONS = data["EXTENSIONS"]
            if not isinstance(data__EXTENSIONS, (dict)):
                raise JsonSchemaValueException("" + (name_prefix or "data") + ".EXTENSIONS must be object")
            data__EXTENSIONS_is_dict = isinstance(data__EXTENSIONS, dict)
            if data__EXTENSIONS_is_dict:
                data__EXTENSIONS_keys = set(data__EXTENSIONS.keys())
                for data__EXTENSIONS_key in data__EXTENSIONS_keys:
                    if data__EXTENSIONS_key not in []:
                        data__EXTENSIONS_value = data__EXTENSIONS.get(data__EXTENSIONS_key)
                        if not isinstance(data__EXTENSIONS_value, (dict)):
                            raise JsonSchemaValueException("" + (name_prefix or "data") + ".EXTENSIONS.{data__EXTENSIONS_key}".format(**locals()) + " must be object")
                        data__EXTENSIONS_value_is_dict = isinstance(data__EXTENSIONS_value, dict)
                        if data__EXTENSIONS_value_is_dict:
                            data__EXTENSIONS_value__missing_keys = set(['module']) - data__EXTENSIONS_value.keys()
                            if data__EXTENSIONS_value__missing_keys:
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".EXTENSIONS.{data__EXTENSIONS_key}".format(**locals()) + " must contain ")
                            data__EXTENSIONS_value_keys = set(data__EXTENSIONS_value.keys())
                            if "module" in data__EXTENSIONS_value_keys:
                                data__EXTENSIONS_value_keys.remove("module")
                                data__EXTENSIONS_value__module = data__EXTENSIONS_value["module"]
                                if not isinstance(data__EXTENSIONS_value__module, (str)):
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".EXTENSIONS.{data__EXTENSIONS_key}.module".format(**locals()) + " must be string")
                                if isinstance(data__EXTENSIONS_value__module, str):
                                    data__EXTENSIONS_value__module_len = len(data__EXTENSIONS_value__module)
                                    if data__EXTENSIONS_value__module_len < 1:
                                        raise JsonSchemaValueException("" + (name_prefix or "data") + ".EXTENSIONS.{data__EXTENSIONS_key}.module".format(**locals()) + " must be longer than or equal to 1 characters")
                            if "settings" in data__EXTENSIONS_value_keys:
                                data__EXTENSIONS_value_keys.remove("settings")
                                data__EXTENSIONS_value__settings = data__EXTENSIONS_value["settings"]
                                if not isinstance(data__EXTENSIONS_value__settings, (dict)):
                                    raise JsonSchemaValueException("" + (name_prefix or "data") + ".EXTENSIONS.{data__EXTENSIONS_key}.settings".format(**locals()) + " must be object")
                            if data__EXTENSIONS_value_keys:
                                raise JsonSchemaValueException("" + (name_prefix or "data") + ".EXTENSIONS.{data__EXTENSIONS_key}".format(**locals()) + " must not contain "+str(data__EXTENSIONS_value_keys)+" properties")
        if data_keys:
            raise JsonSchemaValueException("" + (name_prefix or "data") + " must not contain "+str(data_keys)+" properties")
    return data