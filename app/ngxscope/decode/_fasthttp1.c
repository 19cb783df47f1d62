/* The compiled twins of decode.http1.parse_head_py (an HTTP/1 head -> start line parts,
 * headers in wire order) and parse_response_py (the final response head at the start of a
 * response's bytes).
 *
 * Built by scripts/build_ext.py (setup, CI) and by pip from pyproject.toml's ext-modules
 * (the .deb). decode.http1 keeps the Python function as the reference and uses it when this
 * module is missing or NGXSCOPE_PURE_PYTHON=1; tests/decode/test_fasthttp1.py wants both to
 * give equal results (and equal error messages) for generated, recorded and garbage heads.
 *
 * The Python reference works on the head decoded as latin-1, so every byte is one code point
 * and is handled here as such: lines split at "\n", "\r"s stripped from a line's end, the
 * start line split at its first two spaces, obsolete line folding joined with one space,
 * names up to the first ":" (no byte <= 0x20, no 0x7f), values stripped of what str.strip()
 * strips (Py_UNICODE_ISSPACE). A bad head returns the error message (a str), not a tuple:
 * the caller raises HeadError with it. request_head: RequestStream's common case (a whole,
 * good request head at the buffer's start) in one call; anything else is left to Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *http_slash = NULL;   /* "HTTP/" */

static inline int is_space(unsigned char c) { return Py_UNICODE_ISSPACE((Py_UCS4)c); }

/* latin-1 text of p[0:n]; ASCII (nearly every head) copied straight into a compact str */
static PyObject *text(const unsigned char *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] & 0x80) return PyUnicode_DecodeLatin1((const char *)p, n, NULL);
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL) memcpy(PyUnicode_1BYTE_DATA(s), p, (size_t)n);
    return s;
}

/* `what` + repr(line[:80]) */
static PyObject *bad(const char *what, const unsigned char *p, Py_ssize_t n) {
    PyObject *s = text(p, n < 80 ? n : 80);
    if (s == NULL) return NULL;
    PyObject *r = PyObject_Repr(s);
    Py_DECREF(s);
    if (r == NULL) return NULL;
    PyObject *msg = PyUnicode_FromFormat("%s %U", what, r);
    Py_DECREF(r);
    return msg;
}

/* text of p[0:n] with what str.strip() removes taken off both ends */
static PyObject *stripped(const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t a = 0, b = n;
    while (a < b && is_space(p[a])) a++;
    while (b > a && is_space(p[b - 1])) b--;
    return text(p + a, b - a);
}

static PyObject *head_of(const unsigned char *p, Py_ssize_t n) {
    PyObject *parts = NULL, *headers = NULL, *result = NULL;

    /* the start line: up to the first "\n", "\r"s stripped from its end */
    const unsigned char *nl = memchr(p, '\n', (size_t)n);
    Py_ssize_t line_end = nl ? nl - p : n;
    Py_ssize_t e = line_end;
    while (e > 0 && p[e - 1] == '\r') e--;
    const unsigned char *sp1 = memchr(p, ' ', (size_t)e);
    if (sp1 == NULL) {
        result = bad("bad start line", p, e);
        goto done;
    }
    Py_ssize_t i1 = sp1 - p;
    const unsigned char *sp2 = memchr(p + i1 + 1, ' ', (size_t)(e - i1 - 1));
    parts = PyList_New(sp2 ? 3 : 2);
    if (parts == NULL) goto done;
    PyObject *s;
    if ((s = text(p, i1)) == NULL) goto done;
    PyList_SET_ITEM(parts, 0, s);
    if (sp2) {
        Py_ssize_t i2 = sp2 - p;
        if ((s = text(p + i1 + 1, i2 - i1 - 1)) == NULL) goto done;
        PyList_SET_ITEM(parts, 1, s);
        if ((s = text(p + i2 + 1, e - i2 - 1)) == NULL) goto done;
        PyList_SET_ITEM(parts, 2, s);
    } else {
        if ((s = text(p + i1 + 1, e - i1 - 1)) == NULL) goto done;
        PyList_SET_ITEM(parts, 1, s);
    }

    headers = PyList_New(0);
    if (headers == NULL) goto done;
    Py_ssize_t pos = nl ? line_end + 1 : n + 1;
    while (pos <= n) {
        const unsigned char *q = p + pos;
        const unsigned char *lf = memchr(q, '\n', (size_t)(n - pos));
        Py_ssize_t len = lf ? lf - q : n - pos;
        Py_ssize_t next = pos + len + 1;
        while (len > 0 && q[len - 1] == '\r') len--;
        pos = next;
        if (len == 0) continue;
        Py_ssize_t count = PyList_GET_SIZE(headers);
        if ((q[0] == ' ' || q[0] == '\t') && count) {   /* obsolete line folding */
            PyObject *last = PyList_GET_ITEM(headers, count - 1);
            PyObject *more = stripped(q, len);
            if (more == NULL) goto done;
            PyObject *joined = PyUnicode_FromFormat("%U %U", PyTuple_GET_ITEM(last, 1), more);
            Py_DECREF(more);
            if (joined == NULL) goto done;
            PyObject *pair = PyTuple_Pack(2, PyTuple_GET_ITEM(last, 0), joined);
            Py_DECREF(joined);
            if (pair == NULL) goto done;
            PyList_SetItem(headers, count - 1, pair);
            continue;
        }
        const unsigned char *colon = memchr(q, ':', (size_t)len);
        Py_ssize_t name_len = colon ? colon - q : len;
        int ok = colon != NULL && name_len > 0;
        for (Py_ssize_t k = 0; ok && k < name_len; k++)
            ok = q[k] > 0x20 && q[k] != 0x7f;
        if (!ok) {
            result = bad("bad header line", q, len);
            goto done;
        }
        PyObject *name = text(q, name_len);
        if (name == NULL) goto done;
        PyObject *value = stripped(q + name_len + 1, len - name_len - 1);
        if (value == NULL) { Py_DECREF(name); goto done; }
        PyObject *pair = PyTuple_Pack(2, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (pair == NULL) goto done;
        int rc = PyList_Append(headers, pair);
        Py_DECREF(pair);
        if (rc < 0) goto done;
    }
    result = PyTuple_Pack(2, parts, headers);
done:
    Py_XDECREF(parts);
    Py_XDECREF(headers);
    return result;
}

static PyObject *parse_head(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *result = head_of(view.buf, view.len);
    PyBuffer_Release(&view);
    return result;
}

/* decode.http1.find_head_end: index just past the blank line ending a head at or after
 * `start`, or -1; as nginx, a line ends at LF with or without CR (the regex \n\r?\n) */
static Py_ssize_t find_head_end(const unsigned char *p, Py_ssize_t n, Py_ssize_t start) {
    for (Py_ssize_t k = start; k + 1 < n; k++) {
        if (p[k] != '\n') continue;
        if (p[k + 1] == '\n') return k + 2;
        if (p[k + 1] == '\r' && k + 2 < n && p[k + 2] == '\n') return k + 3;
    }
    return -1;
}

/* ASCII-case-insensitive: is the latin-1 str `s` `lower` (lower-case ASCII)? As s.lower() ==
 * lower: no latin-1 letter but A-Z lowers to ASCII. */
static int name_is(PyObject *s, const char *lower, Py_ssize_t n) {
    if (PyUnicode_GET_LENGTH(s) != n || PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND) return 0;
    const Py_UCS1 *c = PyUnicode_1BYTE_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS1 ch = c[i] >= 'A' && c[i] <= 'Z' ? c[i] + 32 : c[i];
        if (ch != (Py_UCS1)lower[i]) return 0;
    }
    return 1;
}

/* The common case of decode.http1.RequestStream._parse_head: `buf` (the stream's buffer)
 * starts with a whole request head of at most `max_head` bytes that parses (three start
 * line parts, an "HTTP/" version): (method, target, version, headers, head_end, te, cl),
 * te and cl the first Transfer-Encoding and Content-Length values (None: none). None for
 * anything else (no head end yet, too large, malformed): the Python code takes those. */
static PyObject *request_head(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "request_head(buf, max_head)"); return NULL; }
    Py_ssize_t max_head = PyLong_AsSsize_t(args[1]);
    if (max_head == -1 && PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *p = view.buf;
    PyObject *out = NULL, *parsed = NULL;
    Py_ssize_t end = find_head_end(p, view.len, 0);
    if (end < 0 || end > max_head) goto none;
    Py_ssize_t m = end;   /* head.rstrip(b"\r\n") */
    while (m > 0 && (p[m - 1] == '\r' || p[m - 1] == '\n')) m--;
    parsed = head_of(p, m);
    if (parsed == NULL) goto fail;
    if (!PyTuple_Check(parsed)) goto none;   /* an error message: the slow path says it */
    PyObject *parts = PyTuple_GET_ITEM(parsed, 0), *headers = PyTuple_GET_ITEM(parsed, 1);
    if (PyList_GET_SIZE(parts) != 3) goto none;
    PyObject *version = PyList_GET_ITEM(parts, 2);
    Py_ssize_t http = PyUnicode_Tailmatch(version, http_slash, 0, PY_SSIZE_T_MAX, -1);
    if (http < 0) goto fail;
    if (!http) goto none;
    PyObject *te = Py_None, *cl = Py_None;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i), *name = PyTuple_GET_ITEM(pair, 0);
        if (name_is(name, "transfer-encoding", 17)) {
            if (te == Py_None) te = PyTuple_GET_ITEM(pair, 1);
        } else if (cl == Py_None && name_is(name, "content-length", 14)) {
            cl = PyTuple_GET_ITEM(pair, 1);
        }
    }
    out = Py_BuildValue("(OOOOnOO)", PyList_GET_ITEM(parts, 0), PyList_GET_ITEM(parts, 1), version,
                        headers, end, te, cl);
    goto done;
none:
    out = Py_NewRef(Py_None);
    goto done;
fail:
    out = NULL;
done:
    Py_XDECREF(parsed);
    PyBuffer_Release(&view);
    return out;
}

/* decode.http1.parse_response_py, returning (status, reason, version, headers, head_bytes,
 * error): the final response head at the start of a response's captured bytes (1xx
 * skipped). */
static PyObject *response_of(const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t pos = 0;
    for (;;) {
        Py_ssize_t end = find_head_end(p, n, pos);
        if (end < 0)
            return Py_BuildValue("(Oss[]is)", Py_None, "", "", 0,
                                 n ? "response head not captured" : "no response bytes captured");
        Py_ssize_t e = end;
        while (e > pos && (p[e - 1] == '\r' || p[e - 1] == '\n')) e--;
        PyObject *head = head_of(p + pos, e - pos);
        if (head == NULL) return NULL;
        PyObject *msg = NULL;
        if (PyUnicode_Check(head)) {
            msg = PyUnicode_FromFormat("malformed response: %U", head);
            Py_DECREF(head);
            goto error;
        }
        PyObject *parts = PyTuple_GET_ITEM(head, 0), *headers = PyTuple_GET_ITEM(head, 1);
        PyObject *version = PyList_GET_ITEM(parts, 0);
        if (PyUnicode_GET_LENGTH(version) < 5 || memcmp(PyUnicode_DATA(version), "HTTP/", 5) != 0
            || PyUnicode_KIND(version) != PyUnicode_1BYTE_KIND) {
            PyObject *cut = PyBytes_FromStringAndSize((const char *)p + pos, (n - pos) < 40 ? n - pos : 40);
            if (cut != NULL) {
                msg = PyUnicode_FromFormat("malformed response: bad status line %R", cut);
                Py_DECREF(cut);
            }
            Py_DECREF(head);
            goto error;
        }
        PyObject *status = PyLong_FromUnicodeObject(PyList_GET_ITEM(parts, 1), 10);
        if (status == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError)) { Py_DECREF(head); return NULL; }
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            msg = PyUnicode_FromFormat("malformed response: %S", value);
            Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb);
            Py_DECREF(head);
            goto error;
        }
        int overflow = 0;
        long code = PyLong_AsLongAndOverflow(status, &overflow);
        if (!overflow && code >= 100 && code < 200 && code != 101) {
            Py_DECREF(status);
            Py_DECREF(head);
            pos = end;
            continue;
        }
        PyObject *reason = PyList_GET_SIZE(parts) > 2 ? PyList_GET_ITEM(parts, 2) : NULL;
        PyObject *out = reason ? Py_BuildValue("(NOOOnO)", status, reason, version, headers, end, Py_None)
                               : Py_BuildValue("(NsOOnO)", status, "", version, headers, end, Py_None);
        Py_DECREF(head);
        return out;
error:
        if (msg == NULL) return NULL;
        return Py_BuildValue("(Oss[]iN)", Py_None, "", "", 0, msg);
    }
}

static PyObject *parse_response(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *result = response_of(view.buf, view.len);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"parse_head", parse_head, METH_O,
     "parse_head(head) -> (parts, headers), or the error message (str) of a bad head"},
    {"request_head", (PyCFunction)(void (*)(void))request_head, METH_FASTCALL,
     "request_head(buf, max_head) -> (method, target, version, headers, head_end, te, cl) or None"},
    {"parse_response", parse_response, METH_O,
     "parse_response(prefix) -> (status, reason, version, headers, head_bytes, error)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fasthttp1",
                                    "Compiled HTTP/1 head parser (see decode.http1).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fasthttp1(void) {
    if (http_slash == NULL && (http_slash = PyUnicode_InternFromString("HTTP/")) == NULL) return NULL;
    return PyModule_Create(&module);
}
