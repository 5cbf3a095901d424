# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled fast path of the validator (optional: built from this file by `pip install`
when a C compiler is there; `tracking_plan.fastpath` describes it and builds its input).

`FastChecker.check(body, source, received_at)` returns the `Result` of a call that it finds
valid, normalised exactly as the full Python path would (`tracking_plan.validator_codegen`),
and None for anything else: a call with any violation, or one that needs work it leaves to
the full path (identify traits sent in `context.traits`, non-canonical timestamps it cannot
parse, normalised values written inside nested objects, PII keys, nesting deeper than 200
levels...). The caller then runs the full path, which finds every violation. So the fast path
only has to be exact about what it accepts; tests/test_validator_fastpath.py checks that it is.
"""

from libc.math cimport isfinite, floor, rint
from cpython.dict cimport PyDict_Copy, PyDict_SetItem, PyDict_Next
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_XDECREF


cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object, object) except? NULL
    str PyUnicode_New(Py_ssize_t, Py_UCS4)
    bint PyUnicode_IS_READY(object)
    int PyUnicode_KIND(object)
    int PyUnicode_1BYTE_KIND
    void* PyUnicode_DATA(object)
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    PyTypeObject PyMemberDescr_Type
    ctypedef PyObject* (*allocfunc)(PyTypeObject*, Py_ssize_t)
    ctypedef struct AllocType "PyTypeObject":
        allocfunc tp_alloc
    PyObject* PyType_GenericAlloc(PyTypeObject*, Py_ssize_t)

RESULT_FIELDS = (
    "outcome", "event", "violations", "event_key", "event_name", "planned", "event_time", "mode"
)
from cpython.set cimport PySet_Contains

cdef enum:
    K_ANY = 0
    K_STRING = 1
    K_NUMBER = 2
    K_INTEGER = 3
    K_BOOLEAN = 4
    K_OBJECT = 5
    K_ARRAY = 6
    K_TIMESTAMP = 7

cdef double MIN_EPOCH = 946684800.0
cdef double YEAR_10000 = 253402300800.0
cdef double MAX_FUTURE = 86400.0
cdef int MAX_DEPTH = 200
cdef object _ABSENT = object()
cdef object _BAD = object()


cdef enum:
    MAX_ATOMS = 32
    MAX_MATCH_LENGTH = 1024


cdef class SimplePattern:
    """An anchored pattern of ASCII character sets with counts (`^p_[0-9a-z]{4,12}$`), matched
    in C with `re.search`'s answer (`tracking_plan.fastpath.simple_pattern` decides which
    patterns qualify and builds it)."""

    cdef unsigned char sets[MAX_ATOMS][128]
    cdef int mins[MAX_ATOMS]
    cdef int maxs[MAX_ATOMS]
    cdef int count
    cdef bint greedy  # each atom takes the whole run of its characters (see `__init__`)

    def __init__(self, atoms):
        """`atoms`: (characters, least, most) in order; most < 0: no upper bound."""
        if len(atoms) > MAX_ATOMS:
            raise ValueError("too many atoms")
        self.count = len(atoms)
        cdef int i
        for i, (chars, least, most) in enumerate(atoms):
            for j in range(128):
                self.sets[i][j] = 0
            for ch in chars:
                if ord(ch) >= 128:
                    raise ValueError("ASCII only")
                self.sets[i][ord(ch)] = 1
            self.mins[i] = least
            self.maxs[i] = MAX_MATCH_LENGTH + 1 if most < 0 else most
        # When every atom takes at least one character and no two neighbours share one
        # (`^p_[0-9a-z]{4,12}$`), a match has no choice: each atom must take the whole run of
        # its characters where it starts (a shorter take leaves one of its own characters,
        # which the next atom cannot start with), so one greedy left-to-right pass decides.
        self.greedy = all(least >= 1 for _, least, _ in atoms) and all(
            not set(a[0]) & set(b[0]) for a, b in zip(atoms, atoms[1:])
        )

    def match(self, text):
        """1 if `re.search` finds the pattern in `text`, 0 if not, -1 when not decided here."""
        return self.decide(text)

    cdef int decide(self, str text) noexcept:
        cdef Py_ssize_t n = len(text)
        if n > MAX_MATCH_LENGTH or not PyUnicode_IS_READY(text):
            return -1
        if PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND:
            return -1
        cdef const unsigned char* ch = <const unsigned char*>PyUnicode_DATA(text)
        if self.greedy:
            return self.decide_greedy(ch, n)
        cdef unsigned char reach[MAX_MATCH_LENGTH + 2]
        cdef int run[MAX_MATCH_LENGTH + 2]
        cdef int diff[MAX_MATCH_LENGTH + 3]
        cdef Py_ssize_t p, lo, hi
        cdef int a, level, any_reached
        for p in range(n + 1):
            reach[p] = 0
        reach[0] = 1
        for a in range(self.count):
            run[n] = 0  # run[p]: characters of the set from p on
            for p in range(n - 1, -1, -1):
                run[p] = run[p + 1] + 1 if ch[p] < 128 and self.sets[a][ch[p]] else 0
            for p in range(n + 2):
                diff[p] = 0
            for p in range(n + 1):
                if reach[p]:
                    lo = p + self.mins[a]
                    hi = p + (run[p] if run[p] < self.maxs[a] else self.maxs[a])
                    if lo <= hi:
                        diff[lo] += 1
                        diff[hi + 1] -= 1
            level = 0
            any_reached = 0
            for p in range(n + 1):
                level += diff[p]
                reach[p] = level > 0
                any_reached |= reach[p]
            if not any_reached:
                return 0
        # `$`: at the end, or before a newline that ends the text
        if reach[n] or (n >= 1 and ch[n - 1] == 10 and reach[n - 1]):
            return 1
        return 0

    cdef int decide_greedy(self, const unsigned char* ch, Py_ssize_t n) noexcept:
        """`decide` for a `greedy` pattern: each atom takes the run of its characters."""
        cdef Py_ssize_t p = 0, start
        cdef int a
        for a in range(self.count):
            start = p
            while p < n and ch[p] < 128 and self.sets[a][ch[p]] and p - start < self.maxs[a]:
                p += 1
            if p - start < self.mins[a]:
                return 0
        # `$`: at the end, or before a newline that ends the text
        if p == n or (p == n - 1 and ch[p] == 10):
            return 1
        return 0


cdef class Prop:
    """One property of the plan, compiled (built by `tracking_plan.fastpath`)."""

    cdef public str name
    cdef public int kind
    cdef public bint nullable, required, has_default, default_copy, pii_value, currency
    cdef public bint nested_writes  # checking it writes inside a nested container: full path
    cdef public bint has_fields  # objects: check `fields` (else: only a PII search)
    cdef public object default
    cdef public object enum_set  # frozenset when every allowed value is a string
    cdef public object enum_tuple  # else the tuple, checked with `enum_ok`
    cdef public object minimum, maximum  # numbers (Python objects: exact comparisons)
    cdef public bint c_bounds  # the bounds are exact as doubles: floats compare in C
    cdef public double c_min, c_max  # -inf / inf when absent
    cdef public long long len_min, len_max  # strings: length; arrays: item count
    cdef public object search  # compiled pattern's .search, or None
    cdef public SimplePattern simple  # the same pattern matched in C, or None
    cdef public object format_search
    cdef public list fields  # objects: list[Prop] (at most 64)
    cdef public dict by_name  # the same by name
    cdef public int index  # its place in its object's `fields`
    cdef public bint allow  # unlisted fields allowed
    cdef public Prop items  # arrays


cdef class Spec:
    """One planned event, compiled."""

    cdef public str key
    cdef public object container  # "properties", "traits" or None (alias)
    cdef public str container_name  # the key of the container in the output event
    cdef public bint deprecated
    cdef public frozenset sources  # or None
    cdef public tuple call_fields
    cdef public list fields  # at most 64
    cdef public dict by_name  # the same by name
    cdef public bint allow
    cdef public dict modes  # source -> mode (bounded cache)
    cdef public object mode_of  # source -> mode text


cdef class Helpers:
    """Python helpers shared with the full path (exact same semantics)."""

    cdef public object is_pii, safe, enum_ok, parse_canonical, parse_timestamp
    cdef public object format_timestamp, normalise_currency, currency_codes, is_pii_token
    cdef public object deepcopy, now, make_result, plan_version
    cdef public tuple required_context  # tuple of tuples of keys
    cdef Py_ssize_t offsets[8]  # of the slots of `make_result` (see `set_result_type`)
    cdef bint direct  # build results by filling their slots

    def set_result_type(self, cls):
        """`make_result = cls`; when `cls` is a plain class with `__slots__` for
        `RESULT_FIELDS` (the validator's `Result`), its instances are built by filling the
        slots directly (what its generated `__init__` does, without running Python code)."""
        self.make_result = cls
        self.direct = False
        if type(cls) is not type or cls.__init__ is object.__init__:
            return
        if (<AllocType*><PyObject*>cls).tp_alloc != PyType_GenericAlloc:
            return
        if any(f not in getattr(cls, "__slots__", ()) for f in RESULT_FIELDS):
            return
        cdef int i
        for i, name in enumerate(RESULT_FIELDS):
            descr = cls.__dict__[name]
            if type(descr) is not <type>&PyMemberDescr_Type:
                return
            self.offsets[i] = (<PyMemberDescrObject*><PyObject*>descr).d_member.offset
        self.direct = True

    cdef object result(self, object event, object key, object name, object moment, object mode):
        """make_result("valid", event, [], key, name, True, moment, mode)"""
        if not self.direct:
            return self.make_result("valid", event, [], key, name, True, moment, mode)
        cdef PyObject* cls = <PyObject*>self.make_result
        cdef PyObject* obj = (<AllocType*>cls).tp_alloc(<PyTypeObject*>cls, 0)
        if obj is NULL:
            raise MemoryError()
        result = <object>obj  # owns the new reference (and one more: released below)
        Py_DECREF(result)
        cdef char* base = <char*>obj
        put_slot(base, self.offsets[0], "valid")
        put_slot(base, self.offsets[1], event)
        put_slot(base, self.offsets[2], [])
        put_slot(base, self.offsets[3], key)
        put_slot(base, self.offsets[4], name)
        put_slot(base, self.offsets[5], True)
        put_slot(base, self.offsets[6], moment)
        put_slot(base, self.offsets[7], mode)
        return result
    cdef public int identity  # 0 any, 1 userId, 2 anonymousId
    cdef public bint pii_active


cdef inline bint is_container(PyObject* value) noexcept:
    """Is `value` exactly a dict or a list (what the PII search walks into)?"""
    return type(<object>value) is dict or type(<object>value) is list


cdef inline void put_slot(char* base, Py_ssize_t offset, object value) noexcept:
    """Store a new reference to `value` in the (empty) slot at `offset` of an object."""
    Py_INCREF(value)
    (<PyObject**>(base + offset))[0] = <PyObject*>value


cdef inline int days_from_civil(long long y, int m, int d, long long* out) noexcept:
    y -= m <= 2
    cdef long long era = (y if y >= 0 else y - 399) // 400
    cdef long long yoe = y - era * 400
    cdef long long mp = (m + 9) % 12
    cdef long long doy = (153 * mp + 2) // 5 + d - 1
    cdef long long doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    out[0] = era * 146097 + doe - 719468
    return 0


cdef inline void civil_from_days(long long z, int* yy, int* mm, int* dd) noexcept:
    z += 719468
    cdef long long era = (z if z >= 0 else z - 146096) // 146097
    cdef long long doe = z - era * 146097
    cdef long long yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef long long y = yoe + era * 400
    cdef long long doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef long long mp = (5 * doy + 2) // 153
    cdef int d = <int>(doy - (153 * mp + 2) // 5 + 1)
    cdef int m = <int>(mp + 3 if mp < 10 else mp - 9)
    yy[0] = <int>(y + (m <= 2))
    mm[0] = m
    dd[0] = d


cdef inline int days_in_month(int year, int month) noexcept:
    if month == 2:
        return 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28
    if month == 4 or month == 6 or month == 9 or month == 11:
        return 30
    return 31


cdef inline int digit(unsigned int c) noexcept:
    if c >= 48 and c <= 57:
        return <int>c - 48
    return -1


cdef int parse_canonical_c(str text, double* out) noexcept:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ` (a valid date and time) -> epoch seconds, computed as
    `normalise.parse_canonical` does (epoch second + millis / 1000.0). 1 if parsed, else 0."""
    cdef long long second
    cdef int millis
    if not parse_stamp(text, &second, &millis):
        return 0
    out[0] = <double>second + (<double>millis / 1000.0)
    return 1


cdef const char* PAIRS = (
    b"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    b"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    b"8081828384858687888990919293949596979899"
)


cdef inline void put2(char* buf, int at, int value) noexcept:
    """`value` (0..99) as two decimal digits at `buf[at]`."""
    buf[at] = PAIRS[2 * value]
    buf[at + 1] = PAIRS[2 * value + 1]


cdef str format_c(double epoch):
    """`normalise.format_timestamp` for 0 <= epoch < year 10000."""
    cdef double scaled = rint(epoch * 1000.0)  # round half to even, like round()
    cdef long long total = <long long>scaled
    cdef long long second = total // 1000
    cdef int millis = <int>(total - second * 1000)
    cdef long long days = second // 86400
    cdef int rest = <int>(second - days * 86400)
    cdef int y, m, d
    civil_from_days(days, &y, &m, &d)
    text = PyUnicode_New(24, 127)  # ASCII: written in place, no decoding
    cdef char* buf = <char*>PyUnicode_DATA(text)
    put2(buf, 0, y // 100)
    put2(buf, 2, y % 100)
    buf[4] = 45
    put2(buf, 5, m)
    buf[7] = 45
    put2(buf, 8, d)
    buf[10] = 84
    put2(buf, 11, rest // 3600)
    buf[13] = 58
    put2(buf, 14, (rest // 60) % 60)
    buf[16] = 58
    put2(buf, 17, rest % 60)
    buf[19] = 46
    buf[20] = <char>(48 + millis // 100)
    put2(buf, 21, millis % 100)
    buf[23] = 90
    return text


cdef int parse_stamp(str text, long long* second, int* millis) noexcept:
    """The fields of `YYYY-MM-DDTHH:MM:SS.mmmZ` (Latin-1 digits, a valid date and time):
    epoch second and milliseconds in `second`, `millis`. 1 if parsed, else 0."""
    if len(text) != 24:
        return 0
    if not PyUnicode_IS_READY(text) or PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND:
        return 0
    cdef const unsigned char* ch = <const unsigned char*>PyUnicode_DATA(text)
    if ch[4] != 45 or ch[7] != 45 or ch[10] != 84 or ch[13] != 58:  # - - T :
        return 0
    if ch[16] != 58 or ch[19] != 46 or ch[23] != 90:  # : . Z
        return 0
    cdef int pos[17]
    pos[:] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22]
    cdef int d[17]
    cdef int i
    for i in range(17):
        d[i] = digit(ch[pos[i]])
        if d[i] < 0:
            return 0
    cdef int year = d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3]
    cdef int month = d[4] * 10 + d[5]
    cdef int day = d[6] * 10 + d[7]
    cdef int hour = d[8] * 10 + d[9]
    cdef int minute = d[10] * 10 + d[11]
    cdef int sec = d[12] * 10 + d[13]
    if year < 1 or month < 1 or month > 12 or hour > 23 or minute > 59 or sec > 59:
        return 0
    if day < 1 or day > days_in_month(year, month):
        return 0
    cdef long long days
    days_from_civil(year, month, day, &days)
    second[0] = days * 86400 + hour * 3600 + minute * 60 + sec
    millis[0] = d[14] * 100 + d[15] * 10 + d[16]
    return 1


def received_epoch(value):
    """`streams.envelope.received_at_epoch(value)` (the same float) for the stamps the collector
    writes, `YYYY-MM-DDTHH:MM:SS.mmmZ`; None for anything else (the caller then parses it)."""
    cdef long long second
    cdef int millis
    if type(value) is not str or not parse_stamp(<str>value, &second, &millis):
        return None
    return <double>(second * 1000 + millis) / 1000.0  # exact integer, correctly rounded


cdef class FastChecker:
    """See the module docstring. Built by `tracking_plan.fastpath.build_fast_checker`."""

    cdef dict events  # event key -> Spec
    cdef Helpers h
    # keys known to be harmless (not PII names), by identity: a direct-mapped cache in front of
    # the `PiiDetector`'s set (decoders share key objects: orjson caches them), holding
    # references so that an address is never reused while cached
    cdef PyObject* safe_keys[512]
    cdef object full

    def __init__(self, dict events, Helpers helpers, full):
        cdef int i
        for i in range(512):
            self.safe_keys[i] = NULL
        self.events = events
        self.h = helpers
        self.full = full

    def check(self, body, source=None, received_at=None):
        """`Validator.validate`: the valid call's `Result` from here, every other call's from
        the full path (`full`, `Validator.validate_full`)."""
        try:
            result = self._check(body, source, received_at)
        except Exception:
            result = None
        if result is None:
            return self.full(body, source, received_at)
        return result

    def accepts(self, body, source=None, received_at=None):
        """The fast path's `Result`, or None when it leaves the call to the full path."""
        try:
            return self._check(body, source, received_at)
        except Exception:
            return None

    cdef object _check(self, object body, object source, object received_at):
        if type(body) is not dict:
            return None
        cdef dict b = <dict>body
        cdef object call = b.get("type")
        cdef object name = None
        cdef object key
        cdef object context, traits, inner
        cdef bint sent_type = call is not None  # else set in the forwarded event
        if call is None:
            if "event" not in b:
                return None
            call = "track"
        if type(call) is not str:
            return None
        if call == "track":
            name = b.get("event")
            if type(name) is not str or not name:
                return None
            key = name
        elif call == "page" or call == "screen":
            name = b.get("name")
            if name is None or (type(name) is str and not name):
                name = None
                key = call
            elif type(name) is str:
                key = call + ":" + name
            else:
                return None
        elif call == "identify":
            key = "identify"
            traits = b.get("traits")
            if traits is None or (type(traits) is dict and not traits):
                context = b.get("context")
                if type(context) is dict:
                    inner = (<dict>context).get("traits")
                    if type(inner) is dict and inner:
                        return None  # traits in context.traits: the full path
            elif type(traits) is not dict:
                return None
        elif call == "group" or call == "alias":
            key = call
        else:
            return None
        spec_obj = self.events.get(key)
        if spec_obj is None:
            return None
        cdef Spec spec = <Spec>spec_obj
        # received_at, as `validator._plausible_epoch`
        cdef bint has_received = False
        cdef double received = 0.0
        cdef double latest
        if type(received_at) is float:
            received = <double>received_at
            has_received = -1e13 < received < 1e13
        elif type(received_at) is int:
            if -10000000000000 < received_at < 10000000000000:
                received = <double>received_at
                has_received = True
        if has_received:
            latest = received + MAX_FUTURE
        else:
            latest = <double>self.h.now() + MAX_FUTURE
        return self._event(
            b, spec, call, name, key, source, has_received, received, latest, sent_type
        )

    cdef object _event(self, dict b, Spec spec, object call, object name, object key,
                       object source, bint has_received, double received, double latest,
                       bint sent_type):
        cdef Helpers h = self.h
        if spec.deprecated:
            return None
        if spec.sources is not None and source is not None:
            if not PySet_Contains(spec.sources, source):
                return None
        cdef object value
        for field in spec.call_fields:
            value = b.get(field)
            if type(value) is not str or not value:
                return None
        cdef object user = b.get("userId")
        if user is not None and type(user) is not str:
            return None
        cdef object anonymous = b.get("anonymousId")
        if anonymous is not None and type(anonymous) is not str:
            return None
        if h.identity == 0:
            if not user and not anonymous:
                return None
        elif h.identity == 1:
            if not user:
                return None
        elif not anonymous:
            return None
        cdef object context = b.get("context")
        cdef object node
        if context is None:
            if h.required_context:
                return None
        elif type(context) is dict:
            for path in h.required_context:
                node = context
                for part in path:
                    node = (<dict>node).get(part) if type(node) is dict else None
                if node is None:
                    return None
            if h.pii_active and not self._no_pii(context, 0):
                return None
        else:
            return None
        # timestamps
        cdef double sent = 0.0, original = 0.0, stamp = 0.0
        raw_sent = b.get("sentAt")
        raw_original = b.get("originalTimestamp")
        raw_stamp = b.get("timestamp")
        sent_text = self._time(raw_sent, &sent)
        if sent_text is _BAD:
            return None
        original_text = self._time(raw_original, &original)
        if original_text is _BAD:
            return None
        stamp_text = self._time(raw_stamp, &stamp)
        if stamp_text is _BAD:
            return None
        cdef bint has_sent = sent_text is not _ABSENT
        cdef bint has_original = original_text is not _ABSENT
        cdef bint has_stamp = stamp_text is not _ABSENT
        if not has_sent:
            sent_text = None
        if not has_original:
            original_text = None
        if not has_stamp:
            stamp_text = None
        cdef double client = 0.0
        cdef bint has_client = True
        if has_original:
            client, client_text = original, original_text
        elif has_stamp:
            client, client_text = stamp, stamp_text
        else:
            has_client = False
            client_text = None
        cdef double moment = received
        cdef bint has_moment = has_received
        moment_text = None
        if has_client:
            if has_sent and has_received:
                moment = received - (sent - client)
            else:
                moment = client
                moment_text = client_text
            has_moment = True
            if not (MIN_EPOCH <= moment <= latest):
                return None
        # properties
        cdef object raw = None
        cdef object p
        if spec.container is not None:
            raw = b.get(spec.container)
        if raw is None:
            p = {}
        elif type(raw) is dict:
            p = raw
        else:
            return None
        p = self._fields(<dict>p, spec.fields, spec.by_name, spec.allow, 0, latest, True)
        if p is None:
            return None
        mode = spec.modes.get(source)
        if mode is None:
            mode = spec.mode_of(source)
            if len(spec.modes) < 256:
                spec.modes[source] = mode
        # the normalised event, as the full path builds it
        if has_moment and 0.0 <= moment < YEAR_10000:
            if not moment_text:
                moment_text = format_c(moment)
        else:
            moment_text = None
        received_text = None
        if has_received and 0.0 <= received < YEAR_10000:
            received_text = format_c(received)  # (no cache: shared by threads, and cheap)
        cdef dict event = PyDict_Copy(b)
        if not sent_type:  # (else the copy holds `call` already)
            event["type"] = call
        if (raw is not None or p) and p is not raw:  # (the copy holds `raw` already)
            event[spec.container_name] = p
        # (a value that is the very object the copy holds already is not written again)
        if moment_text is not None and moment_text is not raw_stamp:
            event["timestamp"] = moment_text
        if client_text is not None and client_text is not raw_original:
            event["originalTimestamp"] = client_text
        if sent_text is not None and sent_text is not raw_sent:
            event["sentAt"] = sent_text
        if received_text is not None:
            event["receivedAt"] = received_text
        event["planVersion"] = h.plan_version
        return h.result(event, key, name, moment if has_moment else None, mode)

    cdef object _time(self, object raw, double* out):
        """A timestamp field: `_ABSENT`, `_BAD` (a violation: the full path reports it), or
        its normalised text (None for dates outside years 1970..9999), epoch in `out`."""
        if raw is None:
            return _ABSENT
        if type(raw) is str and parse_canonical_c(<str>raw, out):
            return raw
        epoch = self.h.parse_canonical(raw)
        if epoch is not None:
            out[0] = <double>epoch
            return raw
        epoch = self.h.parse_timestamp(raw)
        if epoch is None:
            return _BAD
        out[0] = <double>epoch
        if 0.0 <= out[0] < YEAR_10000:
            return self.h.format_timestamp(epoch)
        return None

    def __dealloc__(self):
        cdef int i
        for i in range(512):
            Py_XDECREF(self.safe_keys[i])
            self.safe_keys[i] = NULL

    cdef inline bint _known_safe(self, PyObject* key) except -1:
        """Is `key` in the PII detector's set of harmless keys (which only grows)?"""
        cdef size_t slot = (<size_t>key >> 4) & 511
        if self.safe_keys[slot] == key:
            return True
        if not PySet_Contains(self.h.safe, <object>key):
            return False
        Py_XDECREF(self.safe_keys[slot])
        Py_INCREF(<object>key)
        self.safe_keys[slot] = key
        return True

    cdef bint _no_pii(self, object value, int depth) except -1:
        """True when no key inside `value` (dicts and lists, at any depth) is a PII name;
        False when one is, or when nesting is deeper than MAX_DEPTH (the full path decides)."""
        if depth > MAX_DEPTH:
            return False
        cdef Py_ssize_t pos = 0
        cdef PyObject* k
        cdef PyObject* v
        cdef object child
        if type(value) is dict:
            while PyDict_Next(value, &pos, &k, &v):
                if not self._known_safe(k) and self.h.is_pii(<object>k):
                    return False
                if is_container(v) and not self._no_pii(<object>v, depth + 1):
                    return False
        else:
            for child in <list>value:
                if is_container(<PyObject*>child) and not self._no_pii(child, depth + 1):
                    return False
        return True

    cdef object _fields(self, dict raw, list fields, dict by_name, bint allow, int depth,
                        double latest, bint top):
        """Check the fields of the dict `raw` (`fields`: at most 64, `by_name` the same by
        name): None when not valid (or for the full path), else `raw`, or a copy holding the
        normalised values (top level only). One pass over `raw`, then the fields it lacks;
        defaults are added in plan order, as the full path does."""
        cdef dict var = raw
        cdef Helpers h = self.h
        cdef Py_ssize_t pos = 0
        cdef PyObject* k
        cdef PyObject* v
        cdef PyObject* found
        cdef type kind
        cdef Prop prop
        cdef object written
        cdef unsigned char seen[64]
        cdef Py_ssize_t i, count = len(fields)
        for i in range(count):
            seen[i] = 0
        while PyDict_Next(raw, &pos, &k, &v):
            found = PyDict_GetItemWithError(by_name, <object>k)
            if found is NULL:  # a key the plan does not name (a failed lookup raises)
                if not self._known_safe(k) and h.is_pii(<object>k):
                    return None
                if not allow:
                    return None
                kind = type(<object>v)
                if (kind is dict or kind is list) and h.pii_active:
                    if not self._no_pii(<object>v, depth + 1):
                        return None
                continue
            prop = <Prop>found
            seen[prop.index] = 1
            if <object>v is None:
                if not prop.nullable:
                    return None
                continue
            written = self._value(prop, <object>v, depth, latest)
            if written is False:
                return None
            if written is not True:
                if not top:
                    return None
                if var is raw:
                    var = dict(raw)
                var[prop.name] = written
        for i in range(count):
            if seen[i]:
                continue
            prop = <Prop>fields[i]
            if prop.has_default:
                if not top:
                    return None
                if var is raw:
                    var = dict(raw)
                var[prop.name] = h.deepcopy(prop.default) if prop.default_copy else prop.default
            elif prop.required:
                return None
        return var

    cdef object _value(self, Prop prop, object v, int depth, double latest):
        """True: valid as it is; False: not valid (or the full path decides); any other
        value: valid once replaced by it (a normalised timestamp or currency code)."""
        cdef Helpers h = self.h
        cdef type kind = type(v)
        cdef int pk = prop.kind
        cdef double number
        cdef int decided
        cdef Py_ssize_t n
        cdef object c
        if prop.pii_value and h.is_pii_token(v):
            return True
        if pk == K_STRING:
            if kind is not str:
                return False
            written = True
            if prop.currency:
                if PySet_Contains(h.currency_codes, v):
                    c = v
                else:
                    c = h.normalise_currency(v)
                if c is None:
                    return False
                if c is not v:
                    v = c
                    written = c
            n = len(<str>v)
            if n > prop.len_max or n < prop.len_min:
                return False
            if prop.search is not None:
                decided = -1 if prop.simple is None else prop.simple.decide(<str>v)
                if decided == 0 or (decided < 0 and prop.search(v) is None):
                    return False
            if prop.format_search is not None and prop.format_search(v) is None:
                return False
            if prop.enum_set is not None:
                if not PySet_Contains(prop.enum_set, v):
                    return False
            elif prop.enum_tuple is not None and not h.enum_ok(v, prop.enum_tuple):
                return False
            return written
        if pk == K_NUMBER or pk == K_INTEGER:
            if kind is float:
                number = <double>v
                if pk == K_NUMBER:
                    if not isfinite(number):
                        return False
                elif not (isfinite(number) and number == floor(number)):
                    return False
            elif kind is not int:
                return False
            if kind is float and prop.c_bounds:
                if number < prop.c_min or number > prop.c_max:
                    return False
            else:
                if prop.minimum is not None and v < prop.minimum:
                    return False
                if prop.maximum is not None and v > prop.maximum:
                    return False
            if prop.enum_tuple is not None and not h.enum_ok(v, prop.enum_tuple):
                return False
            return True
        if pk == K_TIMESTAMP:
            epoch = h.parse_timestamp(v)
            if epoch is None:
                return False
            number = <double>epoch
            if number < MIN_EPOCH or number > latest:
                return False
            return h.format_timestamp(epoch)
        if pk == K_BOOLEAN:
            if kind is not bool:
                return False
            if prop.enum_tuple is not None and not h.enum_ok(v, prop.enum_tuple):
                return False
            return True
        if pk == K_OBJECT:
            if kind is not dict:
                return False
            if prop.nested_writes:
                return False
            if prop.has_fields:
                if self._fields(<dict>v, prop.fields, prop.by_name, prop.allow, depth + 1,
                                latest, False) is None:
                    return False
            elif h.pii_active and not self._no_pii(v, depth + 1):
                return False
            return True
        if pk == K_ARRAY:
            if kind is not list:
                return False
            n = len(<list>v)
            if n > prop.len_max or n < prop.len_min:
                return False
            if prop.items is None:
                if h.pii_active and not self._no_pii(v, depth + 1):
                    return False
                return True
            if prop.nested_writes:
                return False
            for item in <list>v:
                if item is None:
                    if not prop.items.nullable:
                        return False
                elif self._value(prop.items, item, depth + 1, latest) is not True:
                    return False
            return True
        # any
        if (kind is dict or kind is list) and h.pii_active and not self._no_pii(v, depth + 1):
            return False
        if prop.enum_tuple is not None and not h.enum_ok(v, prop.enum_tuple):
            return False
        return True
