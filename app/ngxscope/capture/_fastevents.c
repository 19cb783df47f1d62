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
 * fast). EV_REQ_LOG, whose struct grows with what is read from nginx (_fastreqlog.c parses
 * it), is parsed in C only
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
#include "_fastevents.h"

#define OPEN_TAIL (2 * SOCKADDR_MAX + 8)
#define LINE_CAP 128

static const char *const field_names[F_COUNT] = {
    "kind", "ts", "pid", "fd", "conn_ts", "offset", "aux", "length", "flags", "clock", "seq",
    "data", "peer", "local", "status", "span", "clock_span", "rid", "log", "keep"};

static PyTypeObject *event_type = NULL;
/* RawEvent fields added after this file (with a plain default): set to it on every event */
#define EXTRA_MAX 16
static Py_ssize_t extra_count = 0, extra_offsets[EXTRA_MAX];
static PyObject *extra_values[EXTRA_MAX];
static PyObject *struct_error = NULL;
FE_HIDDEN Py_ssize_t offsets[F_COUNT];
FE_HIDDEN PyObject *empty_str = NULL, *ellipsis = NULL;
static PyObject *empty_bytes = NULL, *minus_one = NULL, *zero_float = NULL;

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
PyObject *format_sockaddr(const unsigned char *raw, uint32_t length) {
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

PyObject *parse_one(const unsigned char *p, Py_ssize_t n, double clock_offset) {
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

int slot_offsets(PyObject *cls, const char *const *names, int count, Py_ssize_t extra,
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
