/*
 * eventsvm.events._avro: Avro binary encoding driven by a compiled schema "program".
 *
 * Written from the Avro 1.11 specification ("Binary Encoding"). eventsvm.events.avro_binary
 * compiles a parsed schema into a flat tuple of nodes; node 0 is the root and children are node
 * indices, so named types referenced again (even recursively) share one node. A Program turns
 * that tuple into C structs once; decoding and encoding then walk the structs and build or read
 * Python objects directly, with no Python frame per field.
 *
 * Node shapes (the opcode is the index of its name in OPCODES):
 *   (null|boolean|int|long|float|double|bytes|string,)
 *   (fixed, size)                      (enum, symbols: tuple[str])
 *   (array, item, least)               (map, value, least)   least: fewest bytes one item takes
 *   (record, names: tuple[str], fields: tuple[int], defaults: tuple[tuple[()] | tuple[object]])
 *   (union, branches: tuple[int])
 *   (skip, item)                       a record field read past and left out of the record's dict
 *                                      (a reader that needs only some fields; never encodes)
 *
 * Every read is bounds-checked: truncated or garbage input raises AvroError (or
 * UnicodeDecodeError), never reads past the buffer and never allocates more items than the
 * remaining bytes could hold. Encoding errors are AvroError naming the field path, never a value.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* T_OBJECT_EX, READONLY: the member descriptors of __slots__ */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum {
    OP_NULL, OP_BOOLEAN, OP_INT, OP_LONG, OP_FLOAT, OP_DOUBLE, OP_BYTES, OP_STRING,
    OP_FIXED, OP_ENUM, OP_ARRAY, OP_MAP, OP_RECORD, OP_UNION, OP_SKIP, OP_LIMIT
};
static const char *const OPCODE_NAMES[OP_LIMIT] = {
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
    "fixed", "enum", "array", "map", "record", "union", "skip",
};

/* How a union branch is chosen for a Python value when encoding: the first branch whose test the
 * value passes, as the pure-Python writer does; like fastavro, a bool goes to a boolean branch
 * when the union has one, even after an int branch. */
enum { BT_NONE, BT_BOOL, BT_INT, BT_FLOAT, BT_STR, BT_BYTES, BT_SEQ, BT_DICT };
static const int BRANCH_TEST[OP_LIMIT] = {
    BT_NONE, BT_BOOL, BT_INT, BT_INT, BT_FLOAT, BT_FLOAT, BT_BYTES, BT_STR,
    BT_BYTES, BT_STR, BT_SEQ, BT_DICT, BT_DICT, -1, -1,
};

/* Nesting deeper than this is garbage (or a self-referencing value), not an event. */
#define MAX_DEPTH 256
#define MAX_PATH 32

typedef struct Node {
    int op;
    Py_ssize_t size;        /* fixed: bytes; enum: symbols; record: fields; union: branches */
    Py_ssize_t least;       /* array, map */
    struct Node *item;      /* array items, map values */
    struct Node **kids;     /* record fields, union branches */
    PyObject **names;       /* record field names, borrowed from the program's source */
    PyObject **defaults;    /* record field defaults or NULL, borrowed */
    PyObject *symbols;      /* enum symbols tuple, borrowed */
    PyObject *symbol_index; /* enum: dict symbol -> int, owned */
    unsigned char *tests;   /* union: BRANCH_TEST of each branch */
    PyObject *template;     /* record: {name: None for every field}, owned */
    int has_bool;           /* union: a boolean branch exists, so a bool is not taken for an int */
} Node;

typedef struct {
    PyObject_HEAD
    PyObject *source;
    Py_ssize_t count;
    Node *nodes;
    int skips; /* it has a skip node: it reads, it never encodes */
} Program;

static PyObject *AvroError;
static PyTypeObject ProgramType;

/* ------------------------------------------------------------------ building a program */

static void
free_nodes(Node *nodes, Py_ssize_t count)
{
    if (nodes == NULL)
        return;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyMem_Free(nodes[i].kids);
        PyMem_Free(nodes[i].names);
        PyMem_Free(nodes[i].defaults);
        PyMem_Free(nodes[i].tests);
        Py_XDECREF(nodes[i].symbol_index);
        Py_XDECREF(nodes[i].template);
    }
    PyMem_Free(nodes);
}

static int
bad_program(Py_ssize_t index, const char *why)
{
    PyErr_Format(PyExc_ValueError, "program node %zd: %s", index, why);
    return -1;
}

static int
node_ref(PyObject *obj, Py_ssize_t count, Py_ssize_t *out)
{
    Py_ssize_t i = PyLong_Check(obj) ? PyLong_AsSsize_t(obj) : -1;
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (i < 0 || i >= count) {
        PyErr_SetString(PyExc_ValueError, "program refers to a node that does not exist");
        return -1;
    }
    *out = i;
    return 0;
}

static int
size_arg(PyObject *obj, Py_ssize_t minimum, Py_ssize_t *out)
{
    Py_ssize_t n = PyLong_Check(obj) ? PyLong_AsSsize_t(obj) : -1;
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n < minimum) {
        PyErr_SetString(PyExc_ValueError, "program holds a size out of range");
        return -1;
    }
    *out = n;
    return 0;
}

static int
build_node(Node *nodes, Py_ssize_t count, Py_ssize_t index, PyObject *spec)
{
    Node *n = &nodes[index];
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 1)
        return bad_program(index, "not a non-empty tuple");
    long op = PyLong_Check(PyTuple_GET_ITEM(spec, 0)) ? PyLong_AsLong(PyTuple_GET_ITEM(spec, 0)) : -1;
    if (op < 0 || op >= OP_LIMIT) {
        PyErr_Clear();
        return bad_program(index, "unknown opcode");
    }
    n->op = (int)op;
    Py_ssize_t arity = PyTuple_GET_SIZE(spec);
    static const Py_ssize_t ARITY[OP_LIMIT] = {1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 3, 4, 2, 2};
    if (arity != ARITY[op])
        return bad_program(index, "wrong number of operands");
    PyObject *a = arity > 1 ? PyTuple_GET_ITEM(spec, 1) : NULL;
    switch (n->op) {
    case OP_FIXED:
        return size_arg(a, 0, &n->size);
    case OP_ENUM:
        if (!PyTuple_Check(a) || PyTuple_GET_SIZE(a) == 0)
            return bad_program(index, "enum symbols must be a non-empty tuple");
        n->symbols = a;
        n->size = PyTuple_GET_SIZE(a);
        n->symbol_index = PyDict_New();
        if (n->symbol_index == NULL)
            return -1;
        for (Py_ssize_t i = 0; i < n->size; i++) {
            PyObject *sym = PyTuple_GET_ITEM(a, i);
            if (!PyUnicode_Check(sym))
                return bad_program(index, "enum symbol is not a str");
            PyObject *at = PyLong_FromSsize_t(i);
            if (at == NULL || PyDict_SetItem(n->symbol_index, sym, at) < 0) {
                Py_XDECREF(at);
                return -1;
            }
            Py_DECREF(at);
        }
        return 0;
    case OP_ARRAY:
    case OP_MAP: {
        Py_ssize_t item;
        if (node_ref(a, count, &item) < 0 || size_arg(PyTuple_GET_ITEM(spec, 2), 1, &n->least) < 0)
            return -1;
        n->item = &nodes[item];
        return 0;
    }
    case OP_SKIP: {
        Py_ssize_t item;
        if (node_ref(a, count, &item) < 0)
            return -1;
        n->item = &nodes[item];
        return 0;
    }
    case OP_RECORD: {
        PyObject *fields = PyTuple_GET_ITEM(spec, 2), *defaults = PyTuple_GET_ITEM(spec, 3);
        if (!PyTuple_Check(a) || !PyTuple_Check(fields) || !PyTuple_Check(defaults)
            || PyTuple_GET_SIZE(fields) != PyTuple_GET_SIZE(a)
            || PyTuple_GET_SIZE(defaults) != PyTuple_GET_SIZE(a))
            return bad_program(index, "record needs names, fields and defaults of one length");
        n->size = PyTuple_GET_SIZE(a);
        n->kids = PyMem_Calloc((size_t)n->size + 1, sizeof(Node *));
        n->names = PyMem_Calloc((size_t)n->size + 1, sizeof(PyObject *));
        n->defaults = PyMem_Calloc((size_t)n->size + 1, sizeof(PyObject *));
        if (n->kids == NULL || n->names == NULL || n->defaults == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < n->size; i++) {
            Py_ssize_t kid;
            PyObject *name = PyTuple_GET_ITEM(a, i), *d = PyTuple_GET_ITEM(defaults, i);
            if (!PyUnicode_Check(name))
                return bad_program(index, "field name is not a str");
            if (!PyTuple_Check(d) || PyTuple_GET_SIZE(d) > 1)
                return bad_program(index, "a default is () or (value,)");
            if (node_ref(PyTuple_GET_ITEM(fields, i), count, &kid) < 0)
                return -1;
            n->kids[i] = &nodes[kid];
            n->names[i] = name;
            n->defaults[i] = PyTuple_GET_SIZE(d) ? PyTuple_GET_ITEM(d, 0) : NULL;
        }
        return 0; /* the template is made by finish_nodes, once every kid's opcode is known */
    }
    case OP_UNION: {
        if (!PyTuple_Check(a) || PyTuple_GET_SIZE(a) == 0)
            return bad_program(index, "union branches must be a non-empty tuple");
        n->size = PyTuple_GET_SIZE(a);
        n->kids = PyMem_Calloc((size_t)n->size, sizeof(Node *));
        n->tests = PyMem_Calloc((size_t)n->size, 1);
        if (n->kids == NULL || n->tests == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < n->size; i++) {
            Py_ssize_t kid;
            if (node_ref(PyTuple_GET_ITEM(a, i), count, &kid) < 0)
                return -1;
            n->kids[i] = &nodes[kid];
        }
        return 0;
    }
    default:
        return 0;
    }
}

/* Record templates and union branch tests need the kids' opcodes, known only once every node
 * is built; a skip node is only ever a record field. */
static int
finish_nodes(Node *nodes, Py_ssize_t count)
{
    if (nodes[0].op == OP_SKIP)
        return bad_program(0, "the root cannot be skipped");
    for (Py_ssize_t i = 0; i < count; i++) {
        Node *n = &nodes[i];
        if ((n->op == OP_ARRAY || n->op == OP_MAP || n->op == OP_SKIP) && n->item->op == OP_SKIP)
            return bad_program(i, "only a record field can be skipped");
        if (n->op == OP_RECORD) {
            n->template = PyDict_New();
            if (n->template == NULL)
                return -1;
            for (Py_ssize_t f = 0; f < n->size; f++)
                if (n->kids[f]->op != OP_SKIP && PyDict_SetItem(n->template, n->names[f], Py_None) < 0)
                    return -1;
        }
        if (n->op != OP_UNION)
            continue;
        for (Py_ssize_t b = 0; b < n->size; b++) {
            int test = BRANCH_TEST[n->kids[b]->op];
            if (test < 0)
                return bad_program(i, n->kids[b]->op == OP_SKIP ? "only a record field can be skipped"
                                                                 : "a union directly inside a union");
            for (Py_ssize_t earlier = 0; earlier < b; earlier++)
                if (n->tests[earlier] == test)
                    return bad_program(i, "union branches a Python value cannot tell apart");
            n->tests[b] = (unsigned char)test;
            n->has_bool |= test == BT_BOOL;
        }
    }
    return 0;
}

static PyObject *
Program_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"nodes", NULL};
    PyObject *source;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!:Program", kwlist, &PyTuple_Type, &source))
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(source);
    if (count == 0) {
        PyErr_SetString(PyExc_ValueError, "a program needs at least one node");
        return NULL;
    }
    Node *nodes = PyMem_Calloc((size_t)count, sizeof(Node));
    if (nodes == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < count; i++) {
        if (build_node(nodes, count, i, PyTuple_GET_ITEM(source, i)) < 0) {
            free_nodes(nodes, count);
            return NULL;
        }
    }
    if (finish_nodes(nodes, count) < 0) {
        free_nodes(nodes, count);
        return NULL;
    }
    Program *self = (Program *)type->tp_alloc(type, 0);
    if (self == NULL) {
        free_nodes(nodes, count);
        return NULL;
    }
    Py_INCREF(source);
    self->source = source;
    self->count = count;
    self->nodes = nodes;
    for (Py_ssize_t i = 0; i < count; i++)
        self->skips |= nodes[i].op == OP_SKIP;
    return (PyObject *)self;
}

static void
Program_dealloc(Program *self)
{
    free_nodes(self->nodes, self->count);
    Py_XDECREF(self->source);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ------------------------------------------------------------------ decoding */

typedef struct {
    const unsigned char *start, *p, *end;
    int depth;
} Src;

static int
truncated(const Src *s)
{
    PyErr_Format(AvroError, "truncated: a value runs past the end of the %zd-byte payload",
                 (Py_ssize_t)(s->end - s->start));
    return -1;
}

static int
garbage(const Src *s, const char *what)
{
    PyErr_Format(AvroError, "%s at byte %zd", what, (Py_ssize_t)(s->p - s->start));
    return -1;
}

static inline int
read_long(Src *s, int64_t *out)
{
    const unsigned char *p = s->p;
    if (p < s->end && *p < 0x80) {
        *out = (int64_t)(*p >> 1) ^ -(int64_t)(*p & 1);
        s->p = p + 1;
        return 0;
    }
    uint64_t acc = 0;
    for (int shift = 0;; shift += 7) {
        if (p >= s->end)
            return truncated(s);
        unsigned b = *p++;
        if (shift == 63 && b > 1)
            return garbage(s, "varint does not fit 64 bits");
        acc |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
    }
    s->p = p;
    *out = (int64_t)(acc >> 1) ^ -(int64_t)(acc & 1);
    return 0;
}

/* A length prefix: non-negative and no longer than what is left. */
static inline int
read_size(Src *s, Py_ssize_t *out)
{
    int64_t n;
    if (read_long(s, &n) < 0)
        return -1;
    if (n < 0)
        return garbage(s, "negative length");
    if (n > (int64_t)(s->end - s->p))
        return truncated(s);
    *out = (Py_ssize_t)n;
    return 0;
}

/* A block count of an array or map: its absolute value, or 0 at the end of the items. */
static int
read_block(Src *s, Py_ssize_t least, Py_ssize_t *out)
{
    int64_t count, bytes;
    if (read_long(s, &count) < 0)
        return -1;
    if (count < 0) {
        if (count == INT64_MIN)
            return garbage(s, "bad block count");
        count = -count;
        if (read_long(s, &bytes) < 0)
            return -1;
        if (bytes < 0)
            return garbage(s, "negative block size");
    }
    /* without this a huge count of tiny items would allocate or spin before running out */
    if (count > (int64_t)((s->end - s->p) / least))
        return garbage(s, "block count exceeds the payload");
    *out = (Py_ssize_t)count;
    return 0;
}

static PyObject *decode_value(const Node *n, Src *s);

/* Whether p[0:len] is UTF-8 that Python's strict decoder accepts (no overlong forms, no
 * surrogates, nothing above U+10FFFF): a skipped string must be refused exactly when decoding
 * it would be, or a projected read would accept an event the full read calls undecodable. */
static int
valid_utf8(const unsigned char *p, Py_ssize_t len)
{
    const unsigned char *end = p + len;
    while (p < end) {
        /* ASCII eight bytes at a time: ids, names and host names are all ASCII */
        while (end - p >= 8) {
            uint64_t word;
            memcpy(&word, p, 8);
            if (word & UINT64_C(0x8080808080808080))
                break;
            p += 8;
        }
        if (p >= end)
            break;
        unsigned c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        int more;
        unsigned lo = 0x80, hi = 0xBF; /* the allowed range of the first continuation byte */
        if (c >= 0xC2 && c <= 0xDF)
            more = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        }
        else
            return 0;
        if (end - p <= more)
            return 0;
        if (p[1] < lo || p[1] > hi)
            return 0;
        for (int i = 2; i <= more; i++)
            if ((p[i] & 0xC0) != 0x80)
                return 0;
        p += more + 1;
    }
    return 1;
}

/* The branch a union value takes, or NULL (error set) when its index is out of range. */
static const Node *
read_branch(const Node *n, Src *s)
{
    int64_t x;
    if (read_long(s, &x) < 0)
        return NULL;
    if (x < 0 || x >= n->size)
        return garbage(s, "union branch out of range"), NULL;
    return n->kids[x];
}

/* Step over a length-prefixed string (checked as UTF-8) or bytes. */
static int
skip_string(Src *s, int utf8)
{
    Py_ssize_t len;
    if (read_size(s, &len) < 0)
        return -1;
    if (utf8 && !valid_utf8(s->p, len))
        return garbage(s, "string is not UTF-8");
    s->p += len;
    return 0;
}

/* Step over one value of `n` without building it, checking it as decoding would. Strings and
 * containers, the costly part, are stepped over here; a scalar is decoded and dropped, so its
 * checks live in decode_value alone (a small int or a bool costs no allocation anyway). */
static int
skip_value(const Node *n, Src *s)
{
    switch (n->op) {
    case OP_NULL:
        return 0;
    case OP_STRING:
    case OP_BYTES:
        return skip_string(s, n->op == OP_STRING);
    case OP_UNION: {
        const Node *branch = read_branch(n, s);
        return branch == NULL ? -1 : skip_value(branch, s);
    }
    case OP_SKIP:
        return skip_value(n->item, s);
    case OP_RECORD:
    case OP_ARRAY:
    case OP_MAP:
        break;
    default: {
        PyObject *v = decode_value(n, s);
        if (v == NULL)
            return -1;
        Py_DECREF(v);
        return 0;
    }
    }
    if (++s->depth > MAX_DEPTH) {
        s->depth--;
        return garbage(s, "values nested too deep");
    }
    int rc = 0;
    if (n->op == OP_RECORD) {
        for (Py_ssize_t i = 0; i < n->size && rc == 0; i++)
            rc = skip_value(n->kids[i], s);
    }
    else { /* array or map */
        for (;;) {
            Py_ssize_t count;
            if ((rc = read_block(s, n->least, &count)) < 0 || count == 0)
                break;
            for (Py_ssize_t i = 0; i < count && rc == 0; i++) {
                if (n->op == OP_MAP)
                    rc = skip_string(s, 1); /* the key */
                if (rc == 0)
                    rc = skip_value(n->item, s);
            }
            if (rc < 0)
                break;
        }
    }
    s->depth--;
    return rc;
}

static inline PyObject *
decode_string(Src *s)
{
    Py_ssize_t len;
    if (read_size(s, &len) < 0)
        return NULL;
    PyObject *str = PyUnicode_DecodeUTF8((const char *)s->p, len, NULL);
    s->p += len;
    return str;
}

static PyObject *
decode_record(const Node *n, Src *s)
{
    /* copying a dict that already holds every key costs one allocation; inserting the keys one
     * by one would resize it as it grows (the public API has no presized dict) */
    PyObject *dict = PyDict_Copy(n->template);
    if (dict == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n->size; i++) {
        if (n->kids[i]->op == OP_SKIP) {
            if (skip_value(n->kids[i], s) < 0) {
                Py_DECREF(dict);
                return NULL;
            }
            continue;
        }
        PyObject *v = decode_value(n->kids[i], s);
        if (v == NULL || PyDict_SetItem(dict, n->names[i], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(dict);
            return NULL;
        }
        Py_DECREF(v);
    }
    return dict;
}

static PyObject *
decode_array(const Node *n, Src *s)
{
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (;;) {
        Py_ssize_t count;
        if (read_block(s, n->least, &count) < 0)
            goto fail;
        if (count == 0)
            return list;
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *v = decode_value(n->item, s);
            if (v == NULL || PyList_Append(list, v) < 0) {
                Py_XDECREF(v);
                goto fail;
            }
            Py_DECREF(v);
        }
    }
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *
decode_map(const Node *n, Src *s)
{
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    for (;;) {
        Py_ssize_t count;
        if (read_block(s, n->least, &count) < 0)
            goto fail;
        if (count == 0)
            return dict;
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *k = decode_string(s);
            if (k == NULL)
                goto fail;
            PyObject *v = decode_value(n->item, s);
            int rc = v == NULL ? -1 : PyDict_SetItem(dict, k, v);
            Py_DECREF(k);
            Py_XDECREF(v);
            if (rc < 0)
                goto fail;
        }
    }
fail:
    Py_DECREF(dict);
    return NULL;
}

static PyObject *
decode_value(const Node *n, Src *s)
{
    int64_t x;
    PyObject *out;
    switch (n->op) {
    case OP_NULL:
        Py_RETURN_NONE;
    case OP_BOOLEAN:
        if (s->p >= s->end)
            return truncated(s), NULL;
        if (*s->p > 1)
            return garbage(s, "boolean byte is neither 0 nor 1"), NULL;
        return PyBool_FromLong(*s->p++);
    case OP_INT:
        if (read_long(s, &x) < 0)
            return NULL;
        if (x < INT32_MIN || x > INT32_MAX)
            return garbage(s, "int out of 32-bit range"), NULL;
        return PyLong_FromLongLong(x);
    case OP_LONG:
        if (read_long(s, &x) < 0)
            return NULL;
        return PyLong_FromLongLong(x);
    case OP_FLOAT:
        if (s->end - s->p < 4)
            return truncated(s), NULL;
        out = PyFloat_FromDouble(PyFloat_Unpack4((const char *)s->p, 1));
        s->p += 4;
        return out;
    case OP_DOUBLE:
        if (s->end - s->p < 8)
            return truncated(s), NULL;
        out = PyFloat_FromDouble(PyFloat_Unpack8((const char *)s->p, 1));
        s->p += 8;
        return out;
    case OP_STRING:
        return decode_string(s);
    case OP_BYTES: {
        Py_ssize_t len;
        if (read_size(s, &len) < 0)
            return NULL;
        out = PyBytes_FromStringAndSize((const char *)s->p, len);
        s->p += len;
        return out;
    }
    case OP_FIXED:
        if (s->end - s->p < n->size)
            return truncated(s), NULL;
        out = PyBytes_FromStringAndSize((const char *)s->p, n->size);
        s->p += n->size;
        return out;
    case OP_ENUM:
        if (read_long(s, &x) < 0)
            return NULL;
        if (x < 0 || x >= n->size)
            return garbage(s, "enum index out of range"), NULL;
        out = PyTuple_GET_ITEM(n->symbols, (Py_ssize_t)x);
        Py_INCREF(out);
        return out;
    case OP_UNION: {
        /* a branch is never itself a union (Program refuses it), so this recursion is one level */
        const Node *branch = read_branch(n, s);
        return branch == NULL ? NULL : decode_value(branch, s);
    }
    default:
        break;
    }
    /* the containers: the only way to nest, so the only place to bound the depth */
    if (++s->depth > MAX_DEPTH) {
        s->depth--;
        return garbage(s, "values nested too deep"), NULL;
    }
    switch (n->op) {
    case OP_RECORD:
        out = decode_record(n, s);
        break;
    case OP_ARRAY:
        out = decode_array(n, s);
        break;
    case OP_MAP:
        out = decode_map(n, s);
        break;
    default:
        out = NULL; /* unreachable: every other opcode returned above */
        PyErr_SetString(PyExc_SystemError, "bad opcode");
    }
    s->depth--;
    return out;
}

static int
get_buffer(PyObject *obj, Py_buffer *view)
{
    return PyObject_GetBuffer(obj, view, PyBUF_SIMPLE);
}

static PyObject *
Program_decode(Program *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "decode(buffer, offset=0)");
        return NULL;
    }
    Py_ssize_t offset = 0;
    if (nargs == 2 && (offset = PyLong_AsSsize_t(args[1])) == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (get_buffer(args[0], &view) < 0)
        return NULL;
    PyObject *result = NULL;
    if (offset < 0 || offset > view.len) {
        PyErr_SetString(PyExc_ValueError, "offset outside the buffer");
    }
    else {
        Src s = {view.buf, (const unsigned char *)view.buf + offset,
                 (const unsigned char *)view.buf + view.len, 0};
        PyObject *value = decode_value(&self->nodes[0], &s);
        if (value != NULL) {
            result = Py_BuildValue("(Nn)", value, (Py_ssize_t)(s.p - s.start));
        }
    }
    PyBuffer_Release(&view);
    return result;
}

/* ------------------------------------------------------------------ encoding */

typedef struct {
    PyObject *name; /* a record field, or NULL for an array index / a map value */
    Py_ssize_t index;
} Step;

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    char *heap;
    int depth;
    Step path[MAX_PATH];
    char stack[2048];
} Sink;

static void
sink_init(Sink *k)
{
    k->buf = k->stack;
    k->len = 0;
    k->cap = (Py_ssize_t)sizeof(k->stack);
    k->heap = NULL;
    k->depth = 0;
}

static int
sink_grow(Sink *k, Py_ssize_t extra)
{
    Py_ssize_t cap = k->cap;
    while (cap - k->len < extra) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *heap = k->heap ? PyMem_Realloc(k->heap, (size_t)cap) : PyMem_Malloc((size_t)cap);
    if (heap == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (k->heap == NULL)
        memcpy(heap, k->stack, (size_t)k->len);
    k->heap = k->buf = heap;
    k->cap = cap;
    return 0;
}

static inline int
sink_reserve(Sink *k, Py_ssize_t extra)
{
    return k->cap - k->len >= extra ? 0 : sink_grow(k, extra);
}

static inline int
put_long(Sink *k, int64_t v)
{
    if (sink_reserve(k, 10) < 0)
        return -1;
    uint64_t z = ((uint64_t)v << 1) ^ ((uint64_t)0 - ((uint64_t)v >> 63));
    unsigned char *out = (unsigned char *)k->buf + k->len;
    while (z > 0x7f) {
        *out++ = (unsigned char)((z & 0x7f) | 0x80);
        z >>= 7;
    }
    *out++ = (unsigned char)z;
    k->len = (Py_ssize_t)((char *)out - k->buf);
    return 0;
}

static inline int
put_raw(Sink *k, const void *data, Py_ssize_t len)
{
    if (sink_reserve(k, len) < 0)
        return -1;
    memcpy(k->buf + k->len, data, (size_t)len);
    k->len += len;
    return 0;
}

static inline int
put_byte(Sink *k, unsigned char b)
{
    if (sink_reserve(k, 1) < 0)
        return -1;
    k->buf[k->len++] = (char)b;
    return 0;
}

static inline int
put_sized(Sink *k, const void *data, Py_ssize_t len)
{
    return put_long(k, len) < 0 ? -1 : put_raw(k, data, len);
}

static int
refuse(const char *what, PyObject *value)
{
    /* names the Python type only: values may be anything a caller put in an event */
    PyErr_Format(AvroError, "%s, got %.100s", what, Py_TYPE(value)->tp_name);
    return -1;
}

static inline void
step_into(Sink *k, PyObject *name, Py_ssize_t index)
{
    if (k->depth < MAX_PATH) {
        k->path[k->depth].name = name;
        k->path[k->depth].index = index;
    }
    k->depth++;
}

static int encode_value(const Node *n, PyObject *v, Sink *k);

static int
encode_buffer(const Node *n, PyObject *v, Sink *k)
{
    if (PyBytes_Check(v)) {
        if (n->op == OP_FIXED && PyBytes_GET_SIZE(v) != n->size)
            return refuse("fixed value of the wrong size", v);
        return n->op == OP_FIXED ? put_raw(k, PyBytes_AS_STRING(v), n->size)
                                 : put_sized(k, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
    }
    if (PyUnicode_Check(v) || !PyObject_CheckBuffer(v))
        return refuse("expected bytes", v);
    Py_buffer view;
    if (PyObject_GetBuffer(v, &view, PyBUF_SIMPLE) < 0)
        return -1;
    int rc;
    if (n->op == OP_FIXED)
        rc = view.len != n->size ? refuse("fixed value of the wrong size", v) : put_raw(k, view.buf, view.len);
    else
        rc = put_sized(k, view.buf, view.len);
    PyBuffer_Release(&view);
    return rc;
}

static int
encode_array(const Node *n, PyObject *v, Sink *k)
{
    if (PyUnicode_Check(v) || PyBytes_Check(v) || PyByteArray_Check(v) || PyDict_Check(v))
        return refuse("expected a list", v);
    PyObject *seq = PySequence_Fast(v, "expected a list");
    if (seq == NULL)
        return -1;
    Py_ssize_t size = PySequence_Fast_GET_SIZE(seq);
    int rc = 0;
    if (size > 0) {
        rc = put_long(k, size);
        for (Py_ssize_t i = 0; rc == 0 && i < size; i++) {
            if (PySequence_Fast_GET_SIZE(seq) != size) {
                rc = refuse("list changed size while being encoded", v);
                break;
            }
            PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
            Py_INCREF(item);
            step_into(k, NULL, i);
            rc = encode_value(n->item, item, k);
            Py_DECREF(item);
            if (rc == 0)
                k->depth--;
        }
    }
    Py_DECREF(seq);
    return rc < 0 ? -1 : put_byte(k, 0); /* the empty block that ends the items */
}

static int
encode_entry(const Node *n, PyObject *key, PyObject *value, Sink *k)
{
    if (!PyUnicode_Check(key)) {
        step_into(k, NULL, -1);
        return refuse("map key must be str", key);
    }
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(key, &len);
    if (utf8 == NULL || put_sized(k, utf8, len) < 0)
        return -1;
    step_into(k, NULL, -1);
    if (encode_value(n->item, value, k) < 0)
        return -1;
    k->depth--;
    return 0;
}

static int
encode_map(const Node *n, PyObject *v, Sink *k)
{
    int rc = 0;
    if (PyDict_Check(v)) {
        Py_ssize_t size = PyDict_GET_SIZE(v), pos = 0, written = 0;
        PyObject *key, *value;
        if (size > 0 && put_long(k, size) < 0)
            return -1;
        while (rc == 0 && PyDict_Next(v, &pos, &key, &value)) {
            Py_INCREF(key);
            Py_INCREF(value);
            rc = ++written > size ? refuse("dict changed size while being encoded", v)
                                  : encode_entry(n, key, value, k);
            Py_DECREF(key);
            Py_DECREF(value);
        }
        if (rc == 0 && written != size)
            rc = refuse("dict changed size while being encoded", v);
    }
    else {
        if (!PyMapping_Check(v) || PyUnicode_Check(v) || PyList_Check(v) || PyTuple_Check(v))
            return refuse("expected a dict", v);
        PyObject *items = PyMapping_Items(v);
        if (items == NULL)
            return -1;
        Py_ssize_t size = PyList_GET_SIZE(items);
        if (size > 0)
            rc = put_long(k, size);
        for (Py_ssize_t i = 0; rc == 0 && i < size; i++) {
            PyObject *pair = PyList_GET_ITEM(items, i);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2)
                rc = refuse("items() must yield pairs", v);
            else
                rc = encode_entry(n, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1), k);
        }
        Py_DECREF(items);
    }
    return rc < 0 ? -1 : put_byte(k, 0); /* the empty block that ends the items */
}

/* A field's value: from a dict (or any mapping), or an attribute of the top-level object. */
static PyObject *
field_of(PyObject *v, PyObject *name, PyObject *fallback, int attributes)
{
    PyObject *out;
    if (attributes) {
        out = PyObject_GetAttr(v, name);
        if (out == NULL && fallback != NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            Py_INCREF(fallback);
            return fallback;
        }
        return out;
    }
    if (PyDict_Check(v)) {
        out = PyDict_GetItemWithError(v, name);
        if (out == NULL) {
            if (PyErr_Occurred())
                return NULL;
            if (fallback == NULL) {
                PyErr_SetString(AvroError, "missing field");
                return NULL;
            }
            out = fallback;
        }
        Py_INCREF(out);
        return out;
    }
    out = PyObject_GetItem(v, name);
    if (out == NULL && PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear();
        if (fallback == NULL) {
            PyErr_SetString(AvroError, "missing field");
            return NULL;
        }
        Py_INCREF(fallback);
        return fallback;
    }
    return out;
}

static int
encode_record(const Node *n, PyObject *v, Sink *k, int attributes)
{
    if (!attributes && !PyDict_Check(v)
        && (!PyMapping_Check(v) || PyUnicode_Check(v) || PyList_Check(v) || PyTuple_Check(v)))
        return refuse("expected a dict", v);
    for (Py_ssize_t i = 0; i < n->size; i++) {
        step_into(k, n->names[i], 0);
        PyObject *fv = field_of(v, n->names[i], n->defaults[i], attributes);
        if (fv == NULL)
            return -1;
        int rc = encode_value(n->kids[i], fv, k);
        Py_DECREF(fv);
        if (rc < 0)
            return -1;
        k->depth--;
    }
    return 0;
}

static inline int
matches(const Node *union_node, int test, PyObject *v)
{
    switch (test) {
    case BT_NONE: return v == Py_None;
    case BT_BOOL: return PyBool_Check(v);
    case BT_INT: return PyLong_Check(v) && !(union_node->has_bool && PyBool_Check(v));
    case BT_FLOAT: return PyFloat_Check(v);
    case BT_STR: return PyUnicode_Check(v);
    case BT_BYTES: return PyBytes_Check(v) || PyByteArray_Check(v);
    case BT_SEQ: return PyList_Check(v) || PyTuple_Check(v);
    default: return PyDict_Check(v);
    }
}

static int
encode_long(const Node *n, PyObject *v, Sink *k)
{
    if (!PyLong_Check(v) && !PyIndex_Check(v))
        return refuse("expected int", v);
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (overflow || (n->op == OP_INT && (x < INT32_MIN || x > INT32_MAX))) {
        PyErr_SetString(AvroError, n->op == OP_INT ? "int out of 32-bit range" : "int out of 64-bit range");
        return -1;
    }
    return put_long(k, x);
}

static int
encode_value(const Node *n, PyObject *v, Sink *k)
{
    switch (n->op) {
    case OP_NULL:
        return v == Py_None ? 0 : refuse("expected None", v);
    case OP_BOOLEAN: {
        /* truthiness, as the pure-Python writer and fastavro do */
        int t = PyObject_IsTrue(v);
        return t < 0 ? -1 : put_byte(k, t ? 1 : 0);
    }
    case OP_INT:
    case OP_LONG:
        return encode_long(n, v, k);
    case OP_FLOAT:
    case OP_DOUBLE: {
        double d = PyFloat_CheckExact(v) ? PyFloat_AS_DOUBLE(v) : PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        Py_ssize_t width = n->op == OP_FLOAT ? 4 : 8;
        if (sink_reserve(k, width) < 0)
            return -1;
        int rc = width == 4 ? PyFloat_Pack4(d, k->buf + k->len, 1) : PyFloat_Pack8(d, k->buf + k->len, 1);
        if (rc < 0)
            return -1;
        k->len += width;
        return 0;
    }
    case OP_STRING: {
        if (!PyUnicode_Check(v))
            return refuse("expected str", v);
        Py_ssize_t len;
        const char *utf8 = PyUnicode_AsUTF8AndSize(v, &len);
        return utf8 == NULL ? -1 : put_sized(k, utf8, len);
    }
    case OP_BYTES:
    case OP_FIXED:
        return encode_buffer(n, v, k);
    case OP_ENUM: {
        if (!PyUnicode_Check(v))
            return refuse("expected an enum symbol (str)", v);
        PyObject *at = PyDict_GetItemWithError(n->symbol_index, v);
        if (at == NULL)
            return PyErr_Occurred() ? -1 : refuse("not a symbol of the enum", v);
        return put_long(k, PyLong_AsLongLong(at));
    }
    case OP_UNION:
        for (Py_ssize_t b = 0; b < n->size; b++) {
            if (matches(n, n->tests[b], v)) {
                if (put_long(k, b) < 0)
                    return -1;
                return n->kids[b]->op == OP_NULL ? 0 : encode_value(n->kids[b], v, k);
            }
        }
        return refuse("value matches no branch of the union", v);
    default:
        break;
    }
    if (k->depth > MAX_DEPTH) {
        PyErr_SetString(AvroError, "values nested too deep (a value that contains itself?)");
        return -1;
    }
    switch (n->op) {
    case OP_RECORD:
        return encode_record(n, v, k, 0);
    case OP_ARRAY:
        return encode_array(n, v, k);
    default:
        return encode_map(n, v, k);
    }
}

/* Re-raise the pending error as AvroError prefixed with the field path where it happened. */
static void
explain_failure(const Sink *k)
{
    if (PyErr_ExceptionMatches(PyExc_MemoryError))
        return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *path = PyUnicode_FromString(""), *msg = NULL, *error = NULL;
    int depth = k->depth < MAX_PATH ? k->depth : MAX_PATH;
    for (int i = 0; path != NULL && i < depth; i++) {
        const Step *st = &k->path[i];
        PyObject *part;
        if (st->name != NULL)
            part = PyUnicode_FromFormat(i ? ".%U" : "%U", st->name);
        else if (st->index >= 0)
            part = PyUnicode_FromFormat("[%zd]", st->index);
        else
            part = PyUnicode_FromString("{}");
        Py_SETREF(path, part == NULL ? NULL : PyUnicode_Concat(path, part));
        Py_XDECREF(part);
    }
    if (path != NULL && k->depth > MAX_PATH)
        Py_SETREF(path, PyUnicode_FromFormat("%U...", path));
    if (path != NULL) {
        const char *where = PyUnicode_GET_LENGTH(path) ? PyUnicode_AsUTF8(path) : "record";
        if (PyErr_GivenExceptionMatches(type, AvroError))
            msg = PyUnicode_FromFormat("%s: %S", where, value);
        else
            msg = PyUnicode_FromFormat("%s: %s: %S", where, ((PyTypeObject *)type)->tp_name, value);
    }
    if (msg != NULL)
        error = PyObject_CallOneArg(AvroError, msg);
    if (error == NULL) {
        Py_XDECREF(path);
        Py_XDECREF(msg);
        PyErr_Restore(type, value, tb);
        return;
    }
    PyException_SetCause(error, value); /* steals value */
    PyErr_SetObject(AvroError, error);
    Py_DECREF(error);
    Py_DECREF(path);
    Py_DECREF(msg);
    Py_XDECREF(type);
    Py_XDECREF(tb);
}

static PyObject *
encode_with(const Program *program, PyObject *header, PyObject *v, int attributes)
{
    Sink k;
    sink_init(&k);
    int rc = 0;
    if (header != NULL && PyBytes_GET_SIZE(header) > 0)
        rc = put_raw(&k, PyBytes_AS_STRING(header), PyBytes_GET_SIZE(header));
    const Node *root = &program->nodes[0];
    if (rc == 0)
        rc = attributes ? encode_record(root, v, &k, 1) : encode_value(root, v, &k);
    PyObject *out = NULL;
    if (rc == 0)
        out = PyBytes_FromStringAndSize(k.buf, k.len);
    else
        explain_failure(&k);
    PyMem_Free(k.heap);
    return out;
}

static PyObject *
Program_encode(Program *self, PyObject *value)
{
    if (self->skips) {
        PyErr_SetString(PyExc_ValueError, "a program that skips fields can only read");
        return NULL;
    }
    return encode_with(self, NULL, value, 0);
}

static PyMethodDef Program_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))Program_decode, METH_FASTCALL,
     "decode(buffer, offset=0) -> (value, end): one value read from buffer[offset:]."},
    {"encode", (PyCFunction)Program_encode, METH_O, "encode(value) -> bytes: the Avro binary of value."},
    {NULL, NULL, 0, NULL},
};

static PyObject *
Program_len(Program *self, void *closure)
{
    return PyLong_FromSsize_t(self->count);
}

static PyGetSetDef Program_getset[] = {
    {"nodes", (getter)Program_len, NULL, "how many nodes the program holds", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ProgramType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "eventsvm.events._avro.Program",
    .tp_basicsize = sizeof(Program),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Program(nodes): a schema compiled for decoding and encoding Avro binary.",
    .tp_new = Program_new,
    .tp_dealloc = (destructor)Program_dealloc,
    .tp_methods = Program_methods,
    .tp_getset = Program_getset,
};

/* ------------------------------------------------------------------ readers and writers */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Program *program;
    Py_ssize_t start;
    PyObject *construct; /* NULL: return the record as a dict */
    PyObject *prefix;    /* tuple passed before the fields to construct */
    Py_ssize_t *offsets; /* with `slots`: where each argument goes in a new construct object */
} Reader;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Program *program;
    PyObject *header;
    int attributes;
} Writer;

static PyObject *
read_whole(Reader *self, const unsigned char *buf, Py_ssize_t len)
{
    if (self->start > len) {
        PyErr_SetString(AvroError, "truncated: payload shorter than its header");
        return NULL;
    }
    Src s = {buf, buf + self->start, buf + len, 0};
    const Node *root = &self->program->nodes[0];
    if (self->construct == NULL) {
        PyObject *value = decode_value(root, &s);
        if (value != NULL && s.p != s.end) {
            Py_DECREF(value);
            return garbage(&s, "trailing bytes"), NULL;
        }
        return value;
    }
    Py_ssize_t npre = PyTuple_GET_SIZE(self->prefix), nargs = npre + root->size;
    if (self->offsets != NULL) {
        /* the fields go straight into the slots of a new object: what a dataclass __init__ that
         * only assigns would do, without its Python frame */
        PyTypeObject *cls = (PyTypeObject *)self->construct;
        PyObject *obj = cls->tp_alloc(cls, 0);
        if (obj == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < npre; i++)
            *(PyObject **)((char *)obj + self->offsets[i]) = Py_NewRef(PyTuple_GET_ITEM(self->prefix, i));
        for (Py_ssize_t i = 0; i < root->size; i++) {
            PyObject *v;
            if (root->kids[i]->op == OP_SKIP) {
                v = skip_value(root->kids[i], &s) < 0 ? NULL : Py_NewRef(Py_None);
            }
            else
                v = decode_value(root->kids[i], &s);
            if (v == NULL) {
                Py_DECREF(obj); /* its dealloc releases the slots filled so far */
                return NULL;
            }
            *(PyObject **)((char *)obj + self->offsets[npre + i]) = v;
        }
        if (s.p != s.end) {
            Py_DECREF(obj);
            return garbage(&s, "trailing bytes"), NULL;
        }
        return obj;
    }
    /* the top-level fields go straight to construct, in order: no dict is built for them */
    PyObject *small[24], **args = nargs <= 24 ? small : PyMem_Malloc((size_t)nargs * sizeof(PyObject *));
    if (args == NULL)
        return PyErr_NoMemory();
    Py_ssize_t filled = 0;
    PyObject *out = NULL;
    for (; filled < root->size; filled++) {
        PyObject *v;
        if (root->kids[filled]->op == OP_SKIP) { /* still an argument: None */
            if (skip_value(root->kids[filled], &s) < 0)
                goto done;
            v = Py_NewRef(Py_None);
        }
        else if ((v = decode_value(root->kids[filled], &s)) == NULL)
            goto done;
        args[npre + filled] = v;
    }
    if (s.p != s.end) {
        garbage(&s, "trailing bytes");
        goto done;
    }
    for (Py_ssize_t i = 0; i < npre; i++)
        args[i] = PyTuple_GET_ITEM(self->prefix, i);
    out = PyObject_Vectorcall(self->construct, args, (size_t)nargs, NULL);
done:
    for (Py_ssize_t i = 0; i < filled; i++)
        Py_DECREF(args[npre + i]);
    if (args != small)
        PyMem_Free(args);
    return out;
}

static PyObject *
Reader_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Reader *self = (Reader *)callable;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "a reader takes one bytes-like argument");
        return NULL;
    }
    PyObject *data = args[0];
    if (PyBytes_Check(data))
        return read_whole(self, (const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    Py_buffer view;
    if (get_buffer(data, &view) < 0)
        return NULL;
    PyObject *out = read_whole(self, view.buf, view.len);
    PyBuffer_Release(&view);
    return out;
}

/* `slots`: the member descriptors of construct's __slots__, one per argument (prefix, then fields),
 * all writable object slots of construct itself; the caller vouches that construct(*args) would
 * do nothing but assign them (eventsvm.events.codec checks that of a dataclass). */
static int
set_slots(Reader *self, PyObject *slots)
{
    const Node *root = &self->program->nodes[0];
    Py_ssize_t nargs = PyTuple_GET_SIZE(self->prefix) + root->size;
    if (self->construct == NULL || !PyType_Check(self->construct)) {
        PyErr_SetString(PyExc_ValueError, "slots needs construct to be a class");
        return -1;
    }
    PyTypeObject *cls = (PyTypeObject *)self->construct;
    if (!PyTuple_Check(slots) || PyTuple_GET_SIZE(slots) != nargs) {
        PyErr_SetString(PyExc_ValueError, "slots needs one member descriptor per argument");
        return -1;
    }
    self->offsets = PyMem_Calloc((size_t)nargs + 1, sizeof(Py_ssize_t));
    if (self->offsets == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyObject *d = PyTuple_GET_ITEM(slots, i);
        if (!Py_IS_TYPE(d, &PyMemberDescr_Type) || ((PyDescrObject *)d)->d_type != cls) {
            PyErr_Format(PyExc_ValueError, "slots[%zd] is not a member descriptor of %s", i, cls->tp_name);
            return -1;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
            PyErr_Format(PyExc_ValueError, "slots[%zd] is not a writable object slot", i);
            return -1;
        }
        self->offsets[i] = m->offset;
    }
    return 0;
}

static PyObject *
Reader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"program", "start", "construct", "prefix", "slots", NULL};
    PyObject *program, *construct = Py_None, *prefix = NULL, *slots = Py_None;
    Py_ssize_t start = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|nOO!O:Reader", kwlist, &ProgramType, &program, &start,
                                     &construct, &PyTuple_Type, &prefix, &slots))
        return NULL;
    if (start < 0) {
        PyErr_SetString(PyExc_ValueError, "start must not be negative");
        return NULL;
    }
    if (construct != Py_None && ((Program *)program)->nodes[0].op != OP_RECORD) {
        PyErr_SetString(PyExc_ValueError, "construct needs a program whose root is a record");
        return NULL;
    }
    Reader *self = (Reader *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = Reader_vectorcall;
    Py_INCREF(program);
    self->program = (Program *)program;
    self->start = start;
    self->construct = construct == Py_None ? NULL : Py_NewRef(construct);
    self->prefix = prefix ? Py_NewRef(prefix) : PyTuple_New(0);
    if (self->prefix == NULL || (slots != Py_None && set_slots(self, slots) < 0)) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
Reader_traverse(Reader *self, visitproc visit, void *arg)
{
    Py_VISIT(self->construct);
    Py_VISIT(self->prefix);
    return 0;
}

static int
Reader_clear(Reader *self)
{
    Py_CLEAR(self->construct);
    Py_CLEAR(self->prefix);
    return 0;
}

static void
Reader_dealloc(Reader *self)
{
    PyObject_GC_UnTrack(self);
    Reader_clear(self);
    PyMem_Free(self->offsets);
    Py_XDECREF(self->program);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "eventsvm.events._avro.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Reader(program, start=0, construct=None, prefix=(), slots=None): called with bytes that\n"
              "must hold exactly one value from `start`; returns it, or construct(*prefix, *top_level_fields);\n"
              "with slots (construct's member descriptors, one per argument) a new construct object whose\n"
              "slots are set directly, for a class whose constructor only assigns them.",
    .tp_new = Reader_new,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_traverse = (traverseproc)Reader_traverse,
    .tp_clear = (inquiry)Reader_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Reader, vectorcall),
};

static PyObject *
Writer_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Writer *self = (Writer *)callable;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "a writer takes one value");
        return NULL;
    }
    return encode_with(self->program, self->header, args[0], self->attributes);
}

static PyObject *
Writer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"program", "header", "attributes", NULL};
    PyObject *program, *header = NULL;
    int attributes = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|O!p:Writer", kwlist, &ProgramType, &program,
                                     &PyBytes_Type, &header, &attributes))
        return NULL;
    if (((Program *)program)->skips) {
        PyErr_SetString(PyExc_ValueError, "a program that skips fields can only read");
        return NULL;
    }
    if (attributes && ((Program *)program)->nodes[0].op != OP_RECORD) {
        PyErr_SetString(PyExc_ValueError, "attributes needs a program whose root is a record");
        return NULL;
    }
    Writer *self = (Writer *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = Writer_vectorcall;
    Py_INCREF(program);
    self->program = (Program *)program;
    self->header = header ? Py_NewRef(header) : PyBytes_FromStringAndSize(NULL, 0);
    self->attributes = attributes;
    if (self->header == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
Writer_dealloc(Writer *self)
{
    Py_XDECREF(self->program);
    Py_XDECREF(self->header);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "eventsvm.events._avro.Writer",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Writer(program, header=b'', attributes=False): called with a value, returns header plus\n"
              "its Avro binary; with attributes the top-level record's fields are read as attributes.",
    .tp_new = Writer_new,
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Writer, vectorcall),
};

/* ------------------------------------------------------------------ module */

static int
module_exec(PyObject *m)
{
    AvroError = PyErr_NewExceptionWithDoc(
        "eventsvm.events._avro.AvroError",
        "Bytes that are not a valid encoding of the schema, or a value that does not fit it.",
        PyExc_ValueError, NULL);
    if (AvroError == NULL || PyModule_AddObjectRef(m, "AvroError", AvroError) < 0)
        return -1;
    PyObject *names = PyTuple_New(OP_LIMIT);
    if (names == NULL)
        return -1;
    for (int i = 0; i < OP_LIMIT; i++) {
        PyObject *s = PyUnicode_InternFromString(OPCODE_NAMES[i]);
        if (s == NULL) {
            Py_DECREF(names);
            return -1;
        }
        PyTuple_SET_ITEM(names, i, s);
    }
    if (PyModule_AddObject(m, "OPCODES", names) < 0) {
        Py_DECREF(names);
        return -1;
    }
    if (PyType_Ready(&ProgramType) < 0 || PyType_Ready(&ReaderType) < 0 || PyType_Ready(&WriterType) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "Program", (PyObject *)&ProgramType) < 0
        || PyModule_AddObjectRef(m, "Reader", (PyObject *)&ReaderType) < 0
        || PyModule_AddObjectRef(m, "Writer", (PyObject *)&WriterType) < 0)
        return -1;
    return 0;
}

static struct PyModuleDef avro_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "eventsvm.events._avro",
    .m_doc = "Avro binary decoding and encoding of compiled schema programs (see avro_binary.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__avro(void)
{
    PyObject *m = PyModule_Create(&avro_module);
    if (m != NULL && module_exec(m) < 0)
        Py_CLEAR(m);
    return m;
}
