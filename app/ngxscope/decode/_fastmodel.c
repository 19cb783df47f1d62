/* A compiled constructor for model.Exchange: what the dataclass __init__ does, without
 * running Python code per field. The emitter (decode.emitter) makes one Exchange per request
 * on the capture's path, and the generated __init__ of its 46 fields cost ~4 µs of that.
 *
 * `Builder(cls, given, defaults, factories)` remembers, for a slots class, where each slot
 * lives, the fields set from arguments (`given`, in call order), every other field's default
 * value, and which of those are a fresh empty list each time (default_factory=list). Calling
 * it with len(given) positional values gives a new instance. decode.emitter derives all
 * three from dataclasses.fields(Exchange) at import, so a field added to the model needs no
 * change here; the pure-Python path (NGXSCOPE_PURE_PYTHON=1) calls Exchange(...) itself and
 * tests/decode/test_compiled.py wants equal exchanges from both.
 *
 * Built by scripts/build_ext.py (setup, CI) and by pip from pyproject.toml's ext-modules.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "../_pyslots.h"

typedef struct {
    PyObject_HEAD
    PyTypeObject *cls;
    Py_ssize_t ngiven, nrest;
    Py_ssize_t *given_at;   /* slot offsets of the given fields, in call order */
    Py_ssize_t *rest_at;    /* slot offsets of the other fields */
    PyObject **rest_value;  /* their defaults (NULL: a new empty list) */
} Builder;

static void builder_dealloc(Builder *self) {
    for (Py_ssize_t i = 0; i < self->nrest; i++) Py_XDECREF(self->rest_value[i]);
    PyMem_Free(self->given_at);
    PyMem_Free(self->rest_at);
    PyMem_Free(self->rest_value);
    Py_XDECREF(self->cls);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Builder(cls, given: tuple[str], defaults: dict[str, object], factories: tuple[str]):
 * every slot of cls must be in exactly one of the three. */
static PyObject *builder_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *cls, *given, *defaults, *factories;
    if (kwds && PyDict_GET_SIZE(kwds)) { PyErr_SetString(PyExc_TypeError, "Builder takes no keywords"); return NULL; }
    if (!PyArg_ParseTuple(args, "O!O!O!O!", &PyType_Type, &cls, &PyTuple_Type, &given, &PyDict_Type, &defaults,
                          &PyTuple_Type, &factories))
        return NULL;
    PyObject *slots = PyObject_GetAttrString(cls, "__slots__");
    if (slots == NULL) return NULL;
    Py_ssize_t nslots = PySequence_Size(slots);
    Py_DECREF(slots);
    Py_ssize_t ngiven = PyTuple_GET_SIZE(given), nrest = PyDict_GET_SIZE(defaults) + PyTuple_GET_SIZE(factories);
    if (nslots < 0) return NULL;
    if (ngiven + nrest != nslots) {
        PyErr_Format(PyExc_TypeError, "%s has %zd slots; given, defaults and factories name %zd",
                     ((PyTypeObject *)cls)->tp_name, nslots, ngiven + nrest);
        return NULL;
    }
    Builder *self = (Builder *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->cls = (PyTypeObject *)Py_NewRef(cls);
    self->given_at = PyMem_Calloc(ngiven ? ngiven : 1, sizeof(Py_ssize_t));
    self->rest_at = PyMem_Calloc(nrest ? nrest : 1, sizeof(Py_ssize_t));
    self->rest_value = PyMem_Calloc(nrest ? nrest : 1, sizeof(PyObject *));
    if (!self->given_at || !self->rest_at || !self->rest_value) { PyErr_NoMemory(); goto fail; }
    for (Py_ssize_t i = 0; i < ngiven; i++) {
        if ((self->given_at[i] = slot_at(self->cls, PyTuple_GET_ITEM(given, i))) < 0) goto fail;
        self->ngiven++;
    }
    Py_ssize_t pos = 0, k = 0;
    PyObject *name, *value;
    while (PyDict_Next(defaults, &pos, &name, &value)) {
        if ((self->rest_at[k] = slot_at(self->cls, name)) < 0) goto fail;
        self->rest_value[k++] = Py_NewRef(value);
        self->nrest = k;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(factories); i++) {
        if ((self->rest_at[k] = slot_at(self->cls, PyTuple_GET_ITEM(factories, i))) < 0) goto fail;
        self->rest_value[k++] = NULL;
        self->nrest = k;
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static PyObject *builder_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Builder *self = (Builder *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != self->ngiven || (kwnames && PyTuple_GET_SIZE(kwnames))) {
        PyErr_Format(PyExc_TypeError, "takes %zd positional arguments (%zd given)", self->ngiven, nargs);
        return NULL;
    }
    PyObject *obj = self->cls->tp_alloc(self->cls, 0);
    if (obj == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->nrest; i++) {
        PyObject *v = self->rest_value[i];
        v = v ? Py_NewRef(v) : PyList_New(0);
        if (v == NULL) { Py_DECREF(obj); return NULL; }
        *(PyObject **)((char *)obj + self->rest_at[i]) = v;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        *(PyObject **)((char *)obj + self->given_at[i]) = Py_NewRef(args[i]);
    return obj;
}

static PyObject *builder_call(PyObject *callable, PyObject *args, PyObject *kwargs) {
    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "takes positional arguments only");
        return NULL;
    }
    return builder_vectorcall(callable, &PyTuple_GET_ITEM(args, 0), (size_t)PyTuple_GET_SIZE(args), NULL);
}

typedef struct {
    Builder base;
    vectorcallfunc vectorcall;
} BuilderVC;

static PyObject *buildervc_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *self = builder_new(type, args, kwds);
    if (self) ((BuilderVC *)self)->vectorcall = builder_vectorcall;
    return self;
}

static PyTypeObject BuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ngxscope.decode._fastmodel.Builder",
    .tp_basicsize = sizeof(BuilderVC),
    .tp_dealloc = (destructor)builder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Builder(cls, given, defaults, factories): a fast constructor for a slots dataclass",
    .tp_new = buildervc_new,
    .tp_call = builder_call,
    .tp_vectorcall_offset = offsetof(BuilderVC, vectorcall),
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastmodel",
                                    "Compiled constructor for model dataclasses (see decode.emitter).", -1, NULL,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fastmodel(void) {
    if (PyType_Ready(&BuilderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Builder", (PyObject *)&BuilderType) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
