/* The compiled twins of capture.events.parse_batch_py (ring-buffer records -> RawEvent)
 * and drain_py (the records out of the ring buffer's memory).
 *
 * Built by scripts/build_ext.py (setup, CI) and by pip from pyproject.toml's ext-modules
 * (the .deb). capture.events keeps the pure-Python parser as the reference and uses it when
 * this module is missing or NGXSCOPE_PURE_PYTHON=1; tests/capture/test_fastevents.py feeds
 * both the same records (recorded, generated, garbage) and wants equal RawEvents.
 *
 * Only the kinds whose layout is known here (EV_OPEN .. EV_REQ_LOG) are parsed in C; every
 * other kind (0, kinds added after this file) goes to the Python function passed in as
 * `slow`, so a new record kind or field needs no change here to be parsed right (only to be
 * fast). EV_REQ_LOG, whose struct grows with what is read from nginx, is parsed here only
 * once `prepare_reqlog` was handed the layout this file knows (capture.events passes its
 * struct formats and constants: another layout is refused and those records go to `slow`),
 * and only when the record is whole and its clock fits 64-bit arithmetic: a short or odd
 * record goes to `slow` too, which then raises or answers exactly as the reference does.
 *
 * RawEvent is a slots dataclass: its instances are allocated directly and each slot set at
 * the offset its member descriptor names (what the dataclass __init__ does, without running
 * Python code per record). `prepare` checks the class has exactly the expected slots; RawEvent fields added later are set to the
 * defaults capture.events hands over (new kinds' own values come from the Python parser).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/* must match capture/events.py (itself checked against bpf/events.h) */
enum { EV_OPEN = 1, EV_RECV = 2, EV_SEND = 3, EV_SENDFILE = 4, EV_CLOSE = 5, EV_REQ_DONE = 6,
       EV_CONNECT = 7, EV_FORK = 8, EV_EXIT = 9, EV_UPSTREAM = 10, EV_STREAM_START = 11,
       EV_STREAM_DONE = 12, EV_CONNECTED = 13, EV_REQ_LOG = 14 };
#define EVF_H2STREAM 0x10
#define HEADER_SIZE 64
#define SOCKADDR_MAX 28
#define OPEN_TAIL (2 * SOCKADDR_MAX + 8)
#define LINE_CAP 128

/* struct ev_reqlog (bpf/events.h) after its header: capture.reqlog's _REQLOG_TAIL and _UPSTATE
 * formats, and the constants below, are what prepare_reqlog checks against these. */
#define REQLOG_TAIL_FORMAT "<qQQQQ14QQII96sI28sQQQQII"
#define UPSTATE_FORMAT "<IIqqq128s"
#define LOC_NAME_CAP 96
#define UPSTATES_MAX 8
#define UPSTATE_PEER_CAP 128
#define UPSTATE_SIZE (3 * 8 + 8 + UPSTATE_PEER_CAP)
#define UPSTATE_GROUP 0xFFFFFFFFu
#define REQLOG_UNIX_CAP 112
#define REQLOG_LINE_CAP 512
#define REQLOGF_CLOCK 0x01
#define REQLOGF_STATES 0x02
#define REQLOGF_UNIX 0x04
#define LOCF_NAMED 0x04
#define LOCF_EXACT 0x08
#define LOCF_NOREGEX 0x10
#define LOCF_REGEX 0x100
/* offsets in the record */
enum { RL_REQUEST_LENGTH = 64, RL_SENT = 72, RL_STATUS = 80, RL_ERR_STATUS = 88, RL_BASE = 96, RL_STRS = 104,
       RL_LOC_CONF = 216, RL_LOC_NAME_LEN = 224, RL_LOC_FLAGS = 228, RL_LOC_NAME = 232, RL_REMOTE_LEN = 328,
       RL_REMOTE = 332, RL_NOW_SEC = 360, RL_NOW_MSEC = 368, RL_START_SEC = 376, RL_START_MSEC = 384,
       RL_RFLAGS = 392, RL_NSTATES = 396, RL_STATES = 400 };

/* RawEvent's fields, in declaration order */
enum { F_KIND, F_TS, F_PID, F_FD, F_CONN_TS, F_OFFSET, F_AUX, F_LENGTH, F_FLAGS, F_CLOCK, F_SEQ,
       F_DATA, F_PEER, F_LOCAL, F_STATUS, F_SPAN, F_CLOCK_SPAN, F_RID, F_LOG, F_KEEP, F_COUNT };
static const char *const field_names[F_COUNT] = {
    "kind", "ts", "pid", "fd", "conn_ts", "offset", "aux", "length", "flags", "clock", "seq",
    "data", "peer", "local", "status", "span", "clock_span", "rid", "log", "keep"};

static PyTypeObject *event_type = NULL;
static Py_ssize_t offsets[F_COUNT];
/* RawEvent fields added after this file (with a plain default): set to it on every event */
#define EXTRA_MAX 16
static Py_ssize_t extra_count = 0, extra_offsets[EXTRA_MAX];
static PyObject *extra_values[EXTRA_MAX];
static PyObject *struct_error = NULL;
/* NginxLog's and UpstreamState's slots (prepare_reqlog); reqlog_type NULL: REQ_LOG to `slow` */
enum { L_STATUS, L_REQUEST_LENGTH, L_BYTES_SENT, L_REQUEST, L_METHOD, L_URI, L_PROTOCOL, L_LOCATION,
       L_REMOTE, L_RID, L_MSEC, L_REQUEST_MS, L_UPSTREAM, L_UPSTREAM_COUNT, L_SERVER, L_COUNT };
static const char *const log_names[L_COUNT] = {
    "status", "request_length", "bytes_sent", "request", "method", "uri", "protocol", "location",
    "remote", "rid", "msec", "request_ms", "upstream", "upstream_count", "server"};
enum { U_PEER, U_STATUS, U_RESPONSE_MS, U_CONNECT_MS, U_HEADER_MS, U_COUNT };
static const char *const upstate_names[U_COUNT] = {"peer", "status", "response_ms", "connect_ms", "header_ms"};
static PyTypeObject *reqlog_type = NULL, *upstate_type = NULL;
static Py_ssize_t log_offsets[L_COUNT], upstate_offsets[U_COUNT];
static PyObject *empty_bytes = NULL, *empty_str = NULL, *minus_one = NULL, *zero_float = NULL, *ellipsis = NULL;

static inline uint64_t u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline int32_t i32(const unsigned char *p) { int32_t v; memcpy(&v, p, 4); return v; }
static inline int64_t i64(const unsigned char *p) { int64_t v; memcpy(&v, p, 8); return v; }

/* Set a slot, stealing `value` (NULL: an error already set). */
static inline int put(PyObject *obj, int field, PyObject *value) {
    if (value == NULL) return -1;
    PyObject **slot = (PyObject **)((char *)obj + offsets[field]);
    PyObject *old = *slot;
    *slot = value;
    Py_XDECREF(old);
    return 0;
}

static inline int put_ref(PyObject *obj, int field, PyObject *value) {
    Py_INCREF(value);
    return put(obj, field, value);
}

/* A unix socket's address: the reference's own answer (its path, completed from
 * /proc/net/unix when cut), so both paths agree; unix sockets are rare, so the call is too. */
static PyObject *format_unix(const unsigned char *raw, uint32_t length) {
    static PyObject *reference = NULL;
    if (reference == NULL) {
        PyObject *mod = PyImport_ImportModule("ngxscope.capture.sockaddr");
        if (mod == NULL) return NULL;
        reference = PyObject_GetAttrString(mod, "format_sockaddr");
        Py_DECREF(mod);
        if (reference == NULL) return NULL;
    }
    return PyObject_CallFunction(reference, "y#I", (const char *)raw, (Py_ssize_t)SOCKADDR_MAX, length);
}

/* capture.sockaddr.format_sockaddr, for the 28 bytes of a sockaddr and its length */
static PyObject *format_sockaddr(const unsigned char *raw, uint32_t length) {
    char addr[INET6_ADDRSTRLEN + 1];
    if (length >= 2 && (raw[0] | (raw[1] << 8)) == AF_UNIX) return format_unix(raw, length);
    if (length < 8) return Py_NewRef(empty_str);
    unsigned family = raw[0] | (raw[1] << 8);
    unsigned port = (raw[2] << 8) | raw[3];
    if (family == AF_INET) {
        if (!inet_ntop(AF_INET, raw + 4, addr, sizeof addr)) return Py_NewRef(empty_str);
        return PyUnicode_FromFormat("%s:%u", addr, port);
    }
    if (family == AF_INET6) {
        if (!inet_ntop(AF_INET6, raw + 8, addr, sizeof addr)) return Py_NewRef(empty_str);
        if (strncmp(addr, "::ffff:", 7) == 0 && strchr(addr, '.'))
            return PyUnicode_FromFormat("%s:%u", addr + 7, port);
        return PyUnicode_FromFormat("[%s]:%u", addr, port);
    }
    return Py_NewRef(empty_str);
}

static PyObject *short_buffer(Py_ssize_t need, Py_ssize_t offset, Py_ssize_t have) {
    PyErr_Format(struct_error,
                 "unpack_from requires a buffer of at least %zd bytes for unpacking %zd bytes at "
                 "offset %zd (actual buffer size is %zd)", need + offset, need, offset, have);
    return NULL;
}

/* The header's five 64-bit slots, then pid, tid (rid, clock_span_us), fd, len (status),
 * cap (span_us), kind, flags, seq: struct.Struct("<QQQQQIIiIIBBH"). */
static PyObject *new_event(void) {
    PyObject *ev = event_type->tp_alloc(event_type, 0);
    if (ev == NULL) return NULL;
    put_ref(ev, F_DATA, empty_bytes);
    put_ref(ev, F_PEER, empty_str);
    put_ref(ev, F_LOCAL, empty_str);
    put_ref(ev, F_SPAN, minus_one);
    put_ref(ev, F_CLOCK_SPAN, minus_one);
    put_ref(ev, F_LOG, Py_None);
    put(ev, F_KEEP, PyLong_FromLong(0));
    for (Py_ssize_t i = 0; i < extra_count; i++) {
        PyObject **slot = (PyObject **)((char *)ev + extra_offsets[i]);
        Py_XSETREF(*slot, Py_NewRef(extra_values[i]));
    }
    return ev;
}

static PyObject *parse_one(const unsigned char *p, Py_ssize_t n, double clock_offset) {
    if (n < HEADER_SIZE) return short_buffer(HEADER_SIZE, 0, n);
    uint64_t ts = u64(p), conn_ts = u64(p + 8), offset = u64(p + 16), owner = u64(p + 24);
    uint64_t clock = u64(p + 32);
    uint32_t pid = u32(p + 40), tid = u32(p + 44), length = u32(p + 52), cap = u32(p + 56);
    int32_t fd = i32(p + 48);
    unsigned kind = p[60], flags = p[61];
    unsigned seq = p[62] | (p[63] << 8);
    int stream_bytes = kind >= EV_RECV && kind <= EV_SENDFILE;
    int is_open = kind == EV_OPEN || kind == EV_CONNECT;
    if (is_open && n < HEADER_SIZE + OPEN_TAIL) return short_buffer(OPEN_TAIL, HEADER_SIZE, n);

    PyObject *ev = new_event();
    if (ev == NULL) return NULL;
    if (put(ev, F_KIND, PyLong_FromUnsignedLong(kind))
        || put(ev, F_TS, PyFloat_FromDouble((double)ts / 1e9 + clock_offset))
        || put(ev, F_PID, PyLong_FromUnsignedLong(pid))
        || put(ev, F_FD, PyLong_FromLong(fd))
        || put(ev, F_CONN_TS, PyLong_FromUnsignedLongLong(conn_ts))
        || put(ev, F_OFFSET, PyLong_FromUnsignedLongLong(offset))
        || put(ev, F_AUX, PyLong_FromUnsignedLongLong(owner))
        || put(ev, F_LENGTH, PyLong_FromUnsignedLong(stream_bytes ? length : 0))
        || put(ev, F_FLAGS, PyLong_FromUnsignedLong(flags))
        || put(ev, F_CLOCK, clock ? PyFloat_FromDouble((double)clock / 1e9 + clock_offset)
                                  : Py_NewRef(zero_float))
        || put(ev, F_SEQ, PyLong_FromUnsignedLong(seq)))
        goto fail;
    uint32_t rid = 0, status = 0;
    if (stream_bytes) {
        if (cap) {
            Py_ssize_t take = n - HEADER_SIZE < (Py_ssize_t)cap ? n - HEADER_SIZE : (Py_ssize_t)cap;
            if (put(ev, F_DATA, PyBytes_FromStringAndSize((const char *)p + HEADER_SIZE, take)))
                goto fail;
        }
        if (owner) rid = tid;
    } else if (kind == EV_REQ_DONE) {
        if (flags & EVF_H2STREAM) {
            rid = tid;
        } else {
            status = length & 0xFFFF;   /* the keep rules above it (capture.events.KEEP_SHIFT) */
            if (put(ev, F_KEEP, PyLong_FromUnsignedLong(length >> 16))) goto fail;
            if (cap && put(ev, F_SPAN, PyFloat_FromDouble((double)(cap - 1) / 1e6))) goto fail;
            if (tid && clock && put(ev, F_CLOCK_SPAN, PyFloat_FromDouble((double)(tid - 1) / 1e6)))
                goto fail;
            if (n > HEADER_SIZE) {
                Py_ssize_t take = n - HEADER_SIZE < LINE_CAP ? n - HEADER_SIZE : LINE_CAP;
                if (put(ev, F_DATA, PyBytes_FromStringAndSize((const char *)p + HEADER_SIZE, take)))
                    goto fail;
            }
        }
    } else if (is_open) {
        const unsigned char *tail = p + HEADER_SIZE;
        if (put(ev, F_PEER, format_sockaddr(tail, u32(tail + 2 * SOCKADDR_MAX)))
            || put(ev, F_LOCAL, format_sockaddr(tail + SOCKADDR_MAX, u32(tail + 2 * SOCKADDR_MAX + 4))))
            goto fail;
        if (kind == EV_CONNECT) rid = tid;
    } else if (kind >= EV_UPSTREAM && kind < EV_CONNECTED) {
        rid = tid;
        if (kind == EV_STREAM_DONE) status = length;
    }
    if (put(ev, F_STATUS, PyLong_FromUnsignedLong(status)) || put(ev, F_RID, PyLong_FromUnsignedLong(rid)))
        goto fail;
    return ev;
fail:
    Py_DECREF(ev);
    return NULL;
}

/* Kinds parsed by parse_one; EV_REQ_LOG by parse_reqlog; the rest (kinds added after this
 * file) by the reference, capture.events._parse_one_py */
static inline int known_kind(unsigned kind) { return kind >= EV_OPEN && kind < EV_REQ_LOG; }

static inline int slot_put(PyObject *obj, Py_ssize_t offset, PyObject *value) {
    if (value == NULL) return -1;
    PyObject **slot = (PyObject **)((char *)obj + offset);
    Py_XSETREF(*slot, value);
    return 0;
}

/* capture.reqlog._ms_or_none */
static inline PyObject *ms_or_none(int64_t v) {
    return v == -1 ? Py_NewRef(Py_None) : PyLong_FromLongLong(v < 0 ? 0 : v);
}

/* name[:min(length, cap)].decode("utf-8", "backslashreplace"), "…" after it when cut */
static PyObject *cut_name(const unsigned char *name, uint32_t length, uint32_t cap) {
    uint32_t k = length < cap ? length : cap;
    PyObject *text = PyUnicode_DecodeUTF8((const char *)name, k, "backslashreplace");
    if (text == NULL || length <= cap) return text;
    PyObject *out = PyUnicode_Concat(text, ellipsis);
    Py_DECREF(text);
    return out;
}

/* capture.reqlog.location_label */
static PyObject *location_label(const unsigned char *name, uint32_t length, uint32_t flags) {
    PyObject *text = cut_name(name, length, LOC_NAME_CAP);
    if (text == NULL || PyUnicode_GET_LENGTH(text) == 0 || flags & LOCF_NAMED) return text;
    const char *prefix = flags & LOCF_REGEX ? "~ " : flags & LOCF_EXACT ? "= " : flags & LOCF_NOREGEX ? "^~ " : NULL;
    if (prefix == NULL) return text;
    PyObject *out = PyUnicode_FromFormat("%s%U", prefix, text);
    Py_DECREF(text);
    return out;
}

/* capture.reqlog._nginx_str: an ngx_str_t (length, address) within `raw` (read from `base`);
 * "" when unset, None when outside */
static PyObject *nginx_str(const unsigned char *raw, Py_ssize_t rawlen, uint64_t base, uint64_t length,
                           uint64_t addr) {
    if (!addr || !length) return Py_NewRef(empty_str);
    if (!base || addr < base) return Py_NewRef(Py_None);
    uint64_t off = addr - base;
    if (off > (uint64_t)rawlen || length > (uint64_t)rawlen - off) return Py_NewRef(Py_None);
    return PyUnicode_DecodeLatin1((const char *)raw + off, (Py_ssize_t)length, NULL);
}

/* One ev_upstate as capture.reqlog.UpstreamState */
static PyObject *upstream_state(const unsigned char *s) {
    uint32_t status = u32(s), peer_len = u32(s + 4);
    PyObject *st = upstate_type->tp_alloc(upstate_type, 0);
    if (st == NULL) return NULL;
    if (slot_put(st, upstate_offsets[U_PEER], peer_len == UPSTATE_GROUP ? Py_NewRef(Py_None)
                                                                     : cut_name(s + 32, peer_len, UPSTATE_PEER_CAP))
        || slot_put(st, upstate_offsets[U_STATUS], status ? PyLong_FromUnsignedLong(status) : Py_NewRef(Py_None))
        || slot_put(st, upstate_offsets[U_RESPONSE_MS], ms_or_none(i64(s + 8)))
        || slot_put(st, upstate_offsets[U_CONNECT_MS], ms_or_none(i64(s + 16)))
        || slot_put(st, upstate_offsets[U_HEADER_MS], ms_or_none(i64(s + 24)))) {
        Py_DECREF(st);
        return NULL;
    }
    return st;
}

/* Whether parse_reqlog takes this record: the layout prepared, the record whole up to its
 * states (the reference raises struct.error on less), nginx's clock small enough that
 * sec * 1000 + msec is exact in 64 bits (else Python's integers give another answer). */
#define CLOCK_SEC_MAX (1ULL << 44)
static int reqlog_fits(const unsigned char *p, Py_ssize_t n) {
    if (reqlog_type == NULL || n < RL_STATES) return 0;
    uint32_t rflags = u32(p + RL_RFLAGS), nstates = u32(p + RL_NSTATES);
    uint32_t held = rflags & REQLOGF_STATES ? (nstates < UPSTATES_MAX ? nstates : UPSTATES_MAX) : 0;
    if (n < RL_STATES + (Py_ssize_t)held * UPSTATE_SIZE) return 0;
    if (rflags & REQLOGF_CLOCK
        && (u64(p + RL_NOW_SEC) >= CLOCK_SEC_MAX || u64(p + RL_START_SEC) >= CLOCK_SEC_MAX
            || u64(p + RL_NOW_MSEC) > UINT32_MAX || u64(p + RL_START_MSEC) > UINT32_MAX))
        return 0;
    return 1;
}

/* capture.reqlog.parse_reqlog, for a record reqlog_fits took */
static PyObject *nginx_log(const unsigned char *p, Py_ssize_t n) {
    uint64_t base = u64(p + RL_BASE), strs[14];
    for (int i = 0; i < 14; i++) strs[i] = u64(p + RL_STRS + 8 * i);
    uint32_t rflags = u32(p + RL_RFLAGS), nstates = u32(p + RL_NSTATES);
    uint32_t held = rflags & REQLOGF_STATES ? (nstates < UPSTATES_MAX ? nstates : UPSTATES_MAX) : 0;
    Py_ssize_t at = RL_STATES + (Py_ssize_t)held * UPSTATE_SIZE;

    PyObject *log = reqlog_type->tp_alloc(reqlog_type, 0);
    if (log == NULL) return NULL;
    PyObject *server;
    if (rflags & REQLOGF_UNIX) {
        Py_ssize_t from = at + 2 < n ? at + 2 : n, to = at + REQLOG_UNIX_CAP < n ? at + REQLOG_UNIX_CAP : n;
        const unsigned char *nul = memchr(p + from, 0, (size_t)(to - from));
        PyObject *path = PyUnicode_DecodeUTF8((const char *)p + from, nul ? nul - (p + from) : to - from, "replace");
        server = path ? PyUnicode_FromFormat("unix:%U", path) : NULL;
        Py_XDECREF(path);
        at += REQLOG_UNIX_CAP;
    } else {
        server = Py_NewRef(empty_str);
    }
    if (slot_put(log, log_offsets[L_SERVER], server)) goto fail;

    const unsigned char *raw = p + (at < n ? at : n);
    Py_ssize_t rawlen = at < n ? (n - at < REQLOG_LINE_CAP ? n - at : REQLOG_LINE_CAP) : 0;
    Py_ssize_t linelen = rawlen;
    if (strs[0] && strs[1] == base && strs[0] < (uint64_t)rawlen) linelen = (Py_ssize_t)strs[0];
    const unsigned char *cr = memchr(raw, '\r', (size_t)linelen);
    if (cr) linelen = cr - raw;
    const unsigned char *lf = memchr(raw, '\n', (size_t)linelen);
    if (lf) linelen = lf - raw;

    PyObject *method = nginx_str(raw, rawlen, base, strs[10], strs[11]);
    if (method == Py_None && base && strs[1] == base && strs[10] == 3) {
        /* nginx replaced method_name with its "GET" constant (see the reference) */
        Py_DECREF(method);
        method = PyUnicode_FromString("GET");
    }
    PyObject *remote = format_sockaddr(p + RL_REMOTE, u32(p + RL_REMOTE_LEN));
    Py_ssize_t rl = remote ? PyUnicode_GET_LENGTH(remote) : 0;
    if (rl >= 2 && PyUnicode_READ_CHAR(remote, rl - 1) == '0' && PyUnicode_READ_CHAR(remote, rl - 2) == ':')
        Py_SETREF(remote, PyUnicode_Substring(remote, 0, rl - 2));   /* realip's client: no port */
    uint64_t status = u64(p + RL_ERR_STATUS) ? u64(p + RL_ERR_STATUS) : u64(p + RL_STATUS);
    if (slot_put(log, log_offsets[L_STATUS], PyLong_FromUnsignedLongLong(status))
        || slot_put(log, log_offsets[L_REQUEST_LENGTH], PyLong_FromLongLong(i64(p + RL_REQUEST_LENGTH)))
        || slot_put(log, log_offsets[L_BYTES_SENT], PyLong_FromUnsignedLongLong(u64(p + RL_SENT)))
        || slot_put(log, log_offsets[L_REQUEST], PyBytes_FromStringAndSize((const char *)raw, linelen))
        || slot_put(log, log_offsets[L_METHOD], method)
        || slot_put(log, log_offsets[L_REMOTE], remote)
        || slot_put(log, log_offsets[L_URI], nginx_str(raw, rawlen, base, strs[8], strs[9]))
        || slot_put(log, log_offsets[L_PROTOCOL], nginx_str(raw, rawlen, base, strs[12], strs[13]))
        || slot_put(log, log_offsets[L_LOCATION],
                    u64(p + RL_LOC_CONF) ? location_label(p + RL_LOC_NAME, u32(p + RL_LOC_NAME_LEN),
                                                          u32(p + RL_LOC_FLAGS))
                                         : Py_NewRef(Py_None))
        || slot_put(log, log_offsets[L_RID], PyLong_FromUnsignedLong(u32(p + 44))))
        goto fail;
    if (rflags & REQLOGF_CLOCK) {
        int64_t msec = (int64_t)(u64(p + RL_NOW_SEC) * 1000 + u64(p + RL_NOW_MSEC));
        int64_t start = (int64_t)(u64(p + RL_START_SEC) * 1000 + u64(p + RL_START_MSEC));
        if (slot_put(log, log_offsets[L_MSEC], PyLong_FromLongLong(msec))
            || slot_put(log, log_offsets[L_REQUEST_MS], PyLong_FromLongLong(msec > start ? msec - start : 0)))
            goto fail;
    } else if (slot_put(log, log_offsets[L_MSEC], Py_NewRef(Py_None))
               || slot_put(log, log_offsets[L_REQUEST_MS], Py_NewRef(Py_None))) {
        goto fail;
    }
    if (rflags & REQLOGF_STATES) {
        PyObject *states = PyList_New(held);
        if (slot_put(log, log_offsets[L_UPSTREAM], states)) goto fail;
        for (uint32_t i = 0; i < held; i++) {
            PyObject *st = upstream_state(p + RL_STATES + (Py_ssize_t)i * UPSTATE_SIZE);
            if (st == NULL) goto fail;
            PyList_SET_ITEM(states, i, st);
        }
        if (slot_put(log, log_offsets[L_UPSTREAM_COUNT], PyLong_FromUnsignedLong(nstates))) goto fail;
    } else if (slot_put(log, log_offsets[L_UPSTREAM], Py_NewRef(Py_None))
               || slot_put(log, log_offsets[L_UPSTREAM_COUNT], PyLong_FromLong(0))) {
        goto fail;
    }
    return log;
fail:
    Py_DECREF(log);
    return NULL;
}

/* EV_REQ_LOG: its header as its REQ_DONE's (length 0), `rid` for an HTTP/2 stream, the log */
static PyObject *parse_reqlog(const unsigned char *p, Py_ssize_t n, double clock_offset) {
    PyObject *ev = parse_one(p, n, clock_offset);
    if (ev == NULL) return NULL;
    if ((p[61] & EVF_H2STREAM && put(ev, F_RID, PyLong_FromUnsignedLong(u32(p + 44))))
        || put(ev, F_LOG, nginx_log(p, n))) {
        Py_DECREF(ev);
        return NULL;
    }
    return ev;
}

/* A record this file parses (else NULL without an error set: the caller hands it to `slow`) */
static PyObject *parse_known(const unsigned char *p, Py_ssize_t n, double clock_offset, int *taken) {
    *taken = 1;
    if (n > 60 && known_kind(p[60])) return parse_one(p, n, clock_offset);
    if (n > 60 && p[60] == EV_REQ_LOG && reqlog_fits(p, n)) return parse_reqlog(p, n, clock_offset);
    *taken = 0;
    return NULL;
}

static PyObject *parse_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "parse_batch(bufs, clock_offset, slow)");
        return NULL;
    }
    if (event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "prepare(RawEvent) was not called");
        return NULL;
    }
    double clock_offset = PyFloat_AsDouble(args[1]);
    if (clock_offset == -1.0 && PyErr_Occurred()) return NULL;
    PyObject *slow = args[2];
    PyObject *seq = PySequence_Fast(args[0], "bufs must be iterable");
    if (seq == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(count);
    if (out == NULL) { Py_DECREF(seq); return NULL; }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *buf = items[i];
        PyObject *ev = NULL;
        int taken = 0;
        if (PyBytes_CheckExact(buf)) {
            ev = parse_known((const unsigned char *)PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf), clock_offset,
                             &taken);
        } else {
            Py_buffer view;
            if (PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE) == 0) {
                ev = parse_known((const unsigned char *)view.buf, view.len, clock_offset, &taken);
                PyBuffer_Release(&view);
            } else {
                PyErr_Clear();
            }
        }
        if (!taken) ev = PyObject_CallFunctionObjArgs(slow, buf, args[1], NULL);
        if (ev == NULL) { Py_DECREF(out); Py_DECREF(seq); return NULL; }
        PyList_SET_ITEM(out, i, ev);
    }
    Py_DECREF(seq);
    return out;
}

/* Where each slot of a slots class lives; refuses a class of another shape. */
static Py_ssize_t member_offset(PyTypeObject *type, PyObject *descr, const char *name) {
    if (descr == NULL || !PyObject_TypeCheck(descr, &PyMemberDescr_Type)
        || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    return ((PyMemberDescrObject *)descr)->d_member->offset;
}

static int slot_offsets(PyObject *cls, const char *const *names, int count, Py_ssize_t extra,
                        Py_ssize_t *out) {
    if (!PyType_Check(cls)) { PyErr_SetString(PyExc_TypeError, "prepare() wants classes"); return -1; }
    PyTypeObject *type = (PyTypeObject *)cls;
    PyObject *slots = PyObject_GetAttrString(cls, "__slots__");
    if (slots == NULL) return -1;
    Py_ssize_t nslots = PySequence_Size(slots);
    Py_DECREF(slots);
    if (nslots != count + extra) {
        PyErr_Format(PyExc_TypeError, "%s has %zd slots, the compiled parser knows %d",
                     type->tp_name, nslots, count);
        return -1;
    }
    for (int i = 0; i < count; i++)
        if ((out[i] = member_offset(type, PyDict_GetItemString(type->tp_dict, names[i]), names[i])) < 0)
            return -1;
    return 0;
}

/* Remember RawEvent and NginxLog, where each of their slots lives, and the defaults of
 * RawEvent's fields this file does not know (a dict: name -> value). */
static PyObject *prepare(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "prepare(RawEvent, NginxLog, extra_defaults)");
        return NULL;
    }
    Py_ssize_t nextra = PyDict_GET_SIZE(args[2]);
    if (nextra > EXTRA_MAX) { PyErr_SetString(PyExc_TypeError, "too many RawEvent fields unknown here"); return NULL; }
    Py_ssize_t ev_at[F_COUNT], extra_at[EXTRA_MAX];   /* kept only when all fit */
    if (slot_offsets(args[0], field_names, F_COUNT, nextra, ev_at) < 0)
        return NULL;
    Py_ssize_t pos = 0, k = 0;
    PyObject *name, *value;
    while (PyDict_Next(args[2], &pos, &name, &value)) {
        const char *cname = PyUnicode_AsUTF8(name);
        if (cname == NULL) return NULL;
        PyObject *descr = PyDict_GetItemWithError(((PyTypeObject *)args[0])->tp_dict, name);
        if ((extra_at[k++] = member_offset((PyTypeObject *)args[0], descr, cname)) < 0) return NULL;
    }
    for (Py_ssize_t i = 0; i < extra_count; i++) Py_CLEAR(extra_values[i]);
    pos = k = 0;
    while (PyDict_Next(args[2], &pos, &name, &value)) {
        extra_offsets[k] = extra_at[k];
        extra_values[k++] = Py_NewRef(value);
    }
    extra_count = nextra;
    memcpy(offsets, ev_at, sizeof offsets);
    Py_XSETREF(event_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_RETURN_NONE;
}

/* prepare_reqlog(NginxLog, UpstreamState, tail_format, upstate_format, constants): the classes
 * EV_REQ_LOG records become, once their shape and the record's layout (capture.reqlog's
 * struct formats and the constants tuple below) are the ones this file knows; TypeError
 * otherwise, and REQ_LOG records keep going to the reference. */
static PyObject *prepare_reqlog(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5 || !PyUnicode_Check(args[2]) || !PyUnicode_Check(args[3]) || !PyTuple_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "prepare_reqlog(NginxLog, UpstreamState, tail_format, upstate_format, constants)");
        return NULL;
    }
    static const long long constants[] = {UPSTATES_MAX, UPSTATE_PEER_CAP, UPSTATE_GROUP, REQLOGF_CLOCK,
                                          REQLOGF_STATES, REQLOGF_UNIX, REQLOG_UNIX_CAP, REQLOG_LINE_CAP,
                                          LOC_NAME_CAP, LOCF_NAMED, LOCF_EXACT, LOCF_NOREGEX, LOCF_REGEX};
    Py_ssize_t nconst = (Py_ssize_t)(sizeof constants / sizeof constants[0]);
    int same = PyUnicode_CompareWithASCIIString(args[2], REQLOG_TAIL_FORMAT) == 0
               && PyUnicode_CompareWithASCIIString(args[3], UPSTATE_FORMAT) == 0
               && PyTuple_GET_SIZE(args[4]) == nconst;
    for (Py_ssize_t i = 0; same && i < nconst; i++) {
        long long v = PyLong_AsLongLong(PyTuple_GET_ITEM(args[4], i));
        if (v == -1 && PyErr_Occurred()) return NULL;
        same = v == constants[i];
    }
    if (!same) {
        PyErr_SetString(PyExc_TypeError, "struct ev_reqlog is not the layout the compiled parser knows");
        return NULL;
    }
    Py_ssize_t log_at[L_COUNT], upstate_at[U_COUNT];
    if (slot_offsets(args[0], log_names, L_COUNT, 0, log_at) < 0
        || slot_offsets(args[1], upstate_names, U_COUNT, 0, upstate_at) < 0)
        return NULL;
    memcpy(log_offsets, log_at, sizeof log_offsets);
    memcpy(upstate_offsets, upstate_at, sizeof upstate_offsets);
    Py_XSETREF(reqlog_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(upstate_type, (PyTypeObject *)Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

/* capture.events.drain_py: the committed records of a ring buffer's data mapping from
 * consumer position `cons` up to `end` (or the first record still busy), and the position
 * after them. The header word is read with acquire order, as libbpf does: a record's bytes
 * are visible once its busy bit is seen clear. */
#define RB_BUSY (1u << 31)
#define RB_DISCARD (1u << 30)

static PyObject *drain(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5) { PyErr_SetString(PyExc_TypeError, "drain(data, cons, end, base, mask)"); return NULL; }
    unsigned long long cons = PyLong_AsUnsignedLongLong(args[1]);
    unsigned long long end = PyLong_AsUnsignedLongLong(args[2]);
    unsigned long long base = PyLong_AsUnsignedLongLong(args[3]);
    unsigned long long mask = PyLong_AsUnsignedLongLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *data = view.buf;
    unsigned long long len = (unsigned long long)view.len;
    PyObject *out = PyList_New(0);
    if (out == NULL) { PyBuffer_Release(&view); return NULL; }
    while (cons < end) {
        unsigned long long off = base + (cons & mask);
        if (off + 4 > len) {
            PyErr_SetString(struct_error, "ring buffer position outside its mapping");
            goto fail;
        }
        uint32_t hdr = __atomic_load_n((const uint32_t *)(data + off), __ATOMIC_ACQUIRE);
        if (hdr & RB_BUSY) break;
        uint32_t n = hdr & ~(RB_BUSY | RB_DISCARD);
        if (!(hdr & RB_DISCARD)) {
            unsigned long long from = off + 8 < len ? off + 8 : len;
            unsigned long long to = off + 8 + n < len ? off + 8 + n : len;
            PyObject *rec = PyBytes_FromStringAndSize((const char *)data + from, (Py_ssize_t)(to - from));
            if (rec == NULL) goto fail;
            int rc = PyList_Append(out, rec);
            Py_DECREF(rec);
            if (rc < 0) goto fail;
        }
        cons += ((unsigned long long)n + 8 + 7) & ~7ULL;
    }
    PyBuffer_Release(&view);
    PyObject *pos = PyLong_FromUnsignedLongLong(cons);
    if (pos == NULL) { Py_DECREF(out); return NULL; }
    PyObject *res = PyTuple_Pack(2, out, pos);
    Py_DECREF(out);
    Py_DECREF(pos);
    return res;
fail:
    PyBuffer_Release(&view);
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"drain", (PyCFunction)(void (*)(void))drain, METH_FASTCALL,
     "drain(data, cons, end, base, mask) -> (list[bytes], new consumer position)"},
    {"parse_batch", (PyCFunction)(void (*)(void))parse_batch, METH_FASTCALL,
     "parse_batch(bufs, clock_offset, slow) -> list[RawEvent]"},
    {"prepare", (PyCFunction)(void (*)(void))prepare, METH_FASTCALL,
     "prepare(RawEvent, NginxLog, extra_defaults): the classes to build"},
    {"prepare_reqlog", (PyCFunction)(void (*)(void))prepare_reqlog, METH_FASTCALL,
     "prepare_reqlog(NginxLog, UpstreamState, tail_format, upstate_format, constants): REQ_LOG in C"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastevents",
                                    "Compiled ring-buffer record parser (see capture.events).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fastevents(void) {
    PyObject *structmod = PyImport_ImportModule("struct");
    if (structmod == NULL) return NULL;
    struct_error = PyObject_GetAttrString(structmod, "error");
    Py_DECREF(structmod);
    if (struct_error == NULL) return NULL;
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    empty_str = PyUnicode_FromString("");
    minus_one = PyFloat_FromDouble(-1.0);
    zero_float = PyFloat_FromDouble(0.0);
    ellipsis = PyUnicode_FromString("\xe2\x80\xa6");   /* U+2026, after a name cut short */
    if (!empty_bytes || !empty_str || !minus_one || !zero_float || !ellipsis) return NULL;
    return PyModule_Create(&module);
}
