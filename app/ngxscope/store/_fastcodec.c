/* A compiled session-line encoder: `store.codec.encode_exchange`'s bytes for an exchange,
 * written straight from the Exchange's slots. The capture writes one such line per request
 * (session file or stream); orjson walking the dataclass, its `default` per body and the
 * joins around it cost ~4-6 µs of that, this ~1.
 *
 * `register(cls, names)`: a slots dataclass serialised as a JSON object of `names` (its
 * fields in declaration order, as orjson writes a dataclass). `exchange_line(ex, ms)`:
 * b'{"t":"exchange",' + ex's fields + ',"duration_ms":' + repr(ms) + b'}\n', or None when
 * anything in it is not written here exactly as the Python path writes it: a non-ASCII or
 * non-exact str, an int beyond 64 bits, a float not finite, a type not registered. The caller then takes the
 * Python path, so the bytes are the same either way (tests/store/test_fastcodec.py).
 *
 * Values: None, bool, int, float (orjson.dumps's own text, given by `floats`: a call per
 * float is cheaper than repr's dtoa; duration_ms is repr's, as encode_exchange writes it), str (JSON escapes as orjson writes them: \" \\ \b \t \n \f \r, other control
 * characters \u00xx), bytes (base64, "" when empty: `codec._body`), list and tuple
 * (arrays), registered dataclasses (objects).
 *
 * Built by scripts/build_ext.py (setup, CI) and by pip from pyproject.toml's ext-modules.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "../_pyslots.h"
#include <math.h>
#include <string.h>

#define MAX_SCHEMAS 8
#define MAX_DEPTH 16

typedef struct {
    PyTypeObject *cls;
    Py_ssize_t n;
    Py_ssize_t *at;   /* slot offsets */
    PyObject **keys;  /* bytes: "name": */
} Schema;

static Schema schemas[MAX_SCHEMAS];
static int nschemas;

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

enum { OK = 0, UNSUPPORTED = 1, FAILED = -1 };

static int grow_slow(Buf *b, Py_ssize_t need) {
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->len + need) cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) { PyErr_NoMemory(); return FAILED; }
    b->p = p;
    b->cap = cap;
    return OK;
}

static inline int grow(Buf *b, Py_ssize_t need) {
    return b->len + need <= b->cap ? OK : grow_slow(b, need);
}

static inline int put(Buf *b, const char *s, Py_ssize_t n) {
    if (grow(b, n) < 0) return FAILED;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return OK;
}

static const char HEX[] = "0123456789abcdef";
static unsigned char ESCAPE[256];  /* set at import: control characters, '"' and '\\' */
static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int put_str(Buf *b, PyObject *s) {
    if (!PyUnicode_IS_ASCII(s)) return UNSUPPORTED;
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    const unsigned char *d = PyUnicode_1BYTE_DATA(s);
    if (grow(b, n * 6 + 2) < 0) return FAILED;
    char *o = b->p + b->len;
    *o++ = '"';
    Py_ssize_t i = 0;
    while (i < n && !ESCAPE[d[i]]) i++;   /* most strings need no escape: one copy */
    memcpy(o, d, i);
    o += i;
    for (; i < n; i++) {
        unsigned char c = d[i];
        if (!ESCAPE[c]) { *o++ = (char)c; continue; }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\t': *o++ = 't'; break;
        case '\n': *o++ = 'n'; break;
        case '\f': *o++ = 'f'; break;
        case '\r': *o++ = 'r'; break;
        default:
            *o++ = 'u'; *o++ = '0'; *o++ = '0';
            *o++ = HEX[c >> 4]; *o++ = HEX[c & 15];
        }
    }
    *o++ = '"';
    b->len = o - b->p;
    return OK;
}

static int put_b64(Buf *b, const unsigned char *d, Py_ssize_t n) {
    if (grow(b, (n + 2) / 3 * 4 + 2) < 0) return FAILED;
    char *o = b->p + b->len;
    *o++ = '"';
    Py_ssize_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)d[i] << 16 | (unsigned)d[i + 1] << 8 | d[i + 2];
        *o++ = B64[v >> 18]; *o++ = B64[(v >> 12) & 63]; *o++ = B64[(v >> 6) & 63]; *o++ = B64[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)d[i] << 16;
        *o++ = B64[v >> 18]; *o++ = B64[(v >> 12) & 63]; *o++ = '='; *o++ = '=';
    } else if (n - i == 2) {
        unsigned v = (unsigned)d[i] << 16 | (unsigned)d[i + 1] << 8;
        *o++ = B64[v >> 18]; *o++ = B64[(v >> 12) & 63]; *o++ = B64[(v >> 6) & 63]; *o++ = '=';
    }
    *o++ = '"';
    b->len = o - b->p;
    return OK;
}

static PyObject *float_dumps;  /* orjson.dumps: a float field's text is orjson's own */

static int put_float(Buf *b, PyObject *v) {
    if (float_dumps == NULL || !isfinite(PyFloat_AS_DOUBLE(v))) return UNSUPPORTED;
    PyObject *text = PyObject_CallOneArg(float_dumps, v);
    if (text == NULL) return FAILED;
    int rc = PyBytes_Check(text) ? put(b, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text)) : UNSUPPORTED;
    Py_DECREF(text);
    return rc;
}

/* duration_ms: repr's text, as encode_exchange writes it (-1e300 < ms < 1e300) */
static int put_repr(Buf *b, double v) {
    if (!(v > -1e300 && v < 1e300)) return UNSUPPORTED;
    char *s = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (s == NULL) return FAILED;
    int rc = put(b, s, (Py_ssize_t)strlen(s));
    PyMem_Free(s);
    return rc;
}

static int put_value(Buf *b, PyObject *v, int depth);

static int put_object(Buf *b, PyObject *obj, const Schema *sc, int depth, int braces) {
    if (braces && put(b, "{", 1) < 0) return FAILED;
    for (Py_ssize_t i = 0; i < sc->n; i++) {
        PyObject *v = *(PyObject **)((char *)obj + sc->at[i]);
        if (v == NULL) return UNSUPPORTED;  /* an unset slot: the Python path says what it does */
        if (i && put(b, ",", 1) < 0) return FAILED;
        if (put(b, PyBytes_AS_STRING(sc->keys[i]), PyBytes_GET_SIZE(sc->keys[i])) < 0) return FAILED;
        int rc = put_value(b, v, depth + 1);
        if (rc) return rc;
    }
    if (braces && put(b, "}", 1) < 0) return FAILED;
    return OK;
}

static const Schema *schema_of(PyTypeObject *t) {
    for (int i = 0; i < nschemas; i++)
        if (schemas[i].cls == t) return &schemas[i];
    return NULL;
}

static int put_value(Buf *b, PyObject *v, int depth) {
    if (depth > MAX_DEPTH) return UNSUPPORTED;
    if (v == Py_None) return put(b, "null", 4);
    if (v == Py_True) return put(b, "true", 4);
    if (v == Py_False) return put(b, "false", 5);
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyUnicode_Type) return put_str(b, v);
    if (t == &PyLong_Type) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) return UNSUPPORTED;
        if (x == -1 && PyErr_Occurred()) return FAILED;
        char tmp[24], *e = tmp + sizeof tmp, *q = e;
        unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
        do { *--q = (char)('0' + u % 10); u /= 10; } while (u);
        if (x < 0) *--q = '-';
        return put(b, q, e - q);
    }
    if (t == &PyFloat_Type) return put_float(b, v);
    if (t == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(v);
        return n ? put_b64(b, (const unsigned char *)PyBytes_AS_STRING(v), n) : put(b, "\"\"", 2);
    }
    if (t == &PyList_Type || t == &PyTuple_Type) {
        int list = t == &PyList_Type;
        if (put(b, "[", 1) < 0) return FAILED;
        /* a list's size is read on each turn: nothing here runs Python code, but stay safe */
        for (Py_ssize_t i = 0; i < (list ? PyList_GET_SIZE(v) : PyTuple_GET_SIZE(v)); i++) {
            if (i && put(b, ",", 1) < 0) return FAILED;
            int rc = put_value(b, list ? PyList_GET_ITEM(v, i) : PyTuple_GET_ITEM(v, i), depth + 1);
            if (rc) return rc;
        }
        return put(b, "]", 1);
    }
    const Schema *sc = schema_of(t);
    if (sc != NULL) return put_object(b, v, sc, depth, 1);
    return UNSUPPORTED;
}

static void schema_clear(Schema *sc) {
    if (sc->keys != NULL)
        for (Py_ssize_t i = 0; i < sc->n; i++) Py_XDECREF(sc->keys[i]);
    PyMem_Free(sc->keys);
    PyMem_Free(sc->at);
    Py_XDECREF(sc->cls);
    memset(sc, 0, sizeof *sc);
}

/* floats(dumps): the function whose bytes are a float's text (orjson.dumps) */
static PyObject *fc_floats(PyObject *mod, PyObject *dumps) {
    Py_XSETREF(float_dumps, Py_NewRef(dumps));
    Py_RETURN_NONE;
}

/* register(cls, names: tuple[str]): objects of exactly cls are written as {"name":value...}
 * in that order. Registering a class again replaces its schema. */
static PyObject *fc_register(PyObject *mod, PyObject *args) {
    PyObject *cls, *names;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &cls, &PyTuple_Type, &names)) return NULL;
    Schema sc = {0};
    sc.n = PyTuple_GET_SIZE(names);
    sc.at = PyMem_Calloc(sc.n ? sc.n : 1, sizeof(Py_ssize_t));
    sc.keys = PyMem_Calloc(sc.n ? sc.n : 1, sizeof(PyObject *));
    sc.cls = (PyTypeObject *)Py_NewRef(cls);
    if (!sc.at || !sc.keys) { PyErr_NoMemory(); goto fail; }
    for (Py_ssize_t i = 0; i < sc.n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_Check(name) || !PyUnicode_IS_ASCII(name)) {
            PyErr_SetString(PyExc_TypeError, "field names must be ASCII str");
            goto fail;
        }
        if ((sc.at[i] = slot_at(sc.cls, name)) < 0) goto fail;
        Buf kb = {PyMem_Malloc(64), 0, 64};
        if (kb.p == NULL) { PyErr_NoMemory(); goto fail; }
        if (put_str(&kb, name) != OK || put(&kb, ":", 1) < 0) { PyMem_Free(kb.p); goto fail; }
        sc.keys[i] = PyBytes_FromStringAndSize(kb.p, kb.len);
        PyMem_Free(kb.p);
        if (sc.keys[i] == NULL) goto fail;
    }
    for (int i = 0; i < nschemas; i++) {
        if (schemas[i].cls == sc.cls) {
            schema_clear(&schemas[i]);
            schemas[i] = sc;
            Py_RETURN_NONE;
        }
    }
    if (nschemas == MAX_SCHEMAS) { PyErr_SetString(PyExc_ValueError, "too many classes"); goto fail; }
    schemas[nschemas++] = sc;
    Py_RETURN_NONE;
fail:
    schema_clear(&sc);
    return NULL;
}

static const char LINE_HEAD[] = "{\"t\":\"exchange\",";
static const char DURATION[] = ",\"duration_ms\":";

/* exchange_line(ex, ms) -> bytes | None (see the top of this file). */
static PyObject *fc_exchange_line(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "exchange_line(ex, ms)"); return NULL; }
    PyObject *ex = args[0], *ms = args[1];
    const Schema *sc = schema_of(Py_TYPE(ex));
    if (sc == NULL || Py_TYPE(ms) != &PyFloat_Type) Py_RETURN_NONE;
    Buf b = {PyMem_Malloc(4096), 0, 4096};
    if (b.p == NULL) return PyErr_NoMemory();
    int rc = put(&b, LINE_HEAD, sizeof LINE_HEAD - 1);
    if (rc == OK) rc = put_object(&b, ex, sc, 0, 0);
    if (rc == OK) rc = put(&b, DURATION, sizeof DURATION - 1);
    if (rc == OK) rc = put_repr(&b, PyFloat_AS_DOUBLE(ms));
    if (rc == OK) rc = put(&b, "}\n", 2);
    PyObject *out = NULL;
    if (rc == OK) out = PyBytes_FromStringAndSize(b.p, b.len);
    else if (rc == UNSUPPORTED) out = Py_NewRef(Py_None);
    PyMem_Free(b.p);
    return out;
}

static PyMethodDef methods[] = {
    {"floats", fc_floats, METH_O, "floats(dumps): a float's text is dumps(value) (orjson.dumps)"},
    {"register", fc_register, METH_VARARGS, "register(cls, names): write objects of cls as JSON objects"},
    {"exchange_line", (PyCFunction)(void (*)(void))fc_exchange_line, METH_FASTCALL,
     "exchange_line(ex, ms) -> the session line of ex, or None (take the Python path)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastcodec", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fastcodec(void) {
    for (int c = 0; c < 0x20; c++) ESCAPE[c] = 1;
    ESCAPE['"'] = ESCAPE['\\'] = 1;
    return PyModule_Create(&module);
}
