/* Shared by the C extensions that read and write dataclass(slots=True) instances directly
 * (decode/_fastmodel.c builds Exchanges, store/_fastcodec.c encodes them): where a slot
 * lives in the instance, so a field is one pointer load instead of an attribute lookup.
 * Include after <Python.h> and <structmember.h>. */
#ifndef NGXSCOPE_PYSLOTS_H
#define NGXSCOPE_PYSLOTS_H

/* Byte offset of slot `name` in instances of `cls`, or -1 with TypeError set when `name` is
 * not an object slot (a renamed or non-slots field must fail loudly, never read garbage). */
static Py_ssize_t slot_at(PyTypeObject *cls, PyObject *name) {
    PyObject *descr = PyDict_GetItemWithError(cls->tp_dict, name);
    if (descr == NULL || !PyObject_TypeCheck(descr, &PyMemberDescr_Type)
        || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "%s.%S is not an object slot", cls->tp_name, name);
        return -1;
    }
    return ((PyMemberDescrObject *)descr)->d_member->offset;
}

#endif
