/* What the two sources of capture._fastevents share: _fastevents.c (ring-buffer records ->
 * RawEvent, the ring buffer drained) and _fastreqlog.c (EV_REQ_LOG -> NginxLog). One
 * extension module: the names below are hidden from every other shared object. */
#ifndef NGXSCOPE_FASTEVENTS_H
#define NGXSCOPE_FASTEVENTS_H

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


/* RawEvent's fields, in declaration order */
enum { F_KIND, F_TS, F_PID, F_FD, F_CONN_TS, F_OFFSET, F_AUX, F_LENGTH, F_FLAGS, F_CLOCK, F_SEQ,
       F_DATA, F_PEER, F_LOCAL, F_STATUS, F_SPAN, F_CLOCK_SPAN, F_RID, F_LOG, F_KEEP, F_COUNT };

#define FE_HIDDEN __attribute__((visibility("hidden")))

/* _fastevents.c: where RawEvent's slots live (prepare), shared constant objects, helpers */
FE_HIDDEN extern Py_ssize_t offsets[F_COUNT];
FE_HIDDEN extern PyObject *empty_str, *ellipsis;
FE_HIDDEN PyObject *format_sockaddr(const unsigned char *raw, uint32_t length);
FE_HIDDEN PyObject *parse_one(const unsigned char *p, Py_ssize_t n, double clock_offset);
FE_HIDDEN int slot_offsets(PyObject *cls, const char *const *names, int count, Py_ssize_t extra, Py_ssize_t *out);

/* _fastreqlog.c */
FE_HIDDEN int reqlog_fits(const unsigned char *p, Py_ssize_t n);
FE_HIDDEN PyObject *parse_reqlog(const unsigned char *p, Py_ssize_t n, double clock_offset);
FE_HIDDEN PyObject *prepare_reqlog(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

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

static inline int slot_put(PyObject *obj, Py_ssize_t offset, PyObject *value) {
    if (value == NULL) return -1;
    PyObject **slot = (PyObject **)((char *)obj + offset);
    Py_XSETREF(*slot, value);
    return 0;
}

#endif
