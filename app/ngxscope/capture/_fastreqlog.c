/* capture._fastevents, continued: EV_REQ_LOG records parsed whole (nginx's logged values,
 * location label, realip client, clock, upstream states, unix listener) into NginxLog and
 * UpstreamState, the compiled twin of capture.reqlog.parse_reqlog; see _fastevents.c for
 * how the module falls back to the reference. */
#include "_fastevents.h"

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
int reqlog_fits(const unsigned char *p, Py_ssize_t n) {
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
PyObject *parse_reqlog(const unsigned char *p, Py_ssize_t n, double clock_offset) {
    PyObject *ev = parse_one(p, n, clock_offset);
    if (ev == NULL) return NULL;
    if ((p[61] & EVF_H2STREAM && put(ev, F_RID, PyLong_FromUnsignedLong(u32(p + 44))))
        || put(ev, F_LOG, nginx_log(p, n))) {
        Py_DECREF(ev);
        return NULL;
    }
    return ev;
}

/* prepare_reqlog(NginxLog, UpstreamState, tail_format, upstate_format, constants): the classes
 * EV_REQ_LOG records become, once their shape and the record's layout (capture.reqlog's
 * struct formats and the constants tuple below) are the ones this file knows; TypeError
 * otherwise, and REQ_LOG records keep going to the reference. */
PyObject *prepare_reqlog(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
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
