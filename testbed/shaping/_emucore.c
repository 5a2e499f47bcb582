/* The link emulator's hot loop, compiled: read, stamp, judge, hold, release, log.
 *
 * Two parts, both checked against the pure Python reference (testbed/shaping/model.py) packet
 * for packet by tests/unit/test_emucore.py:
 *   Model  the link model for links without a schedule (loss -> droptail queue -> rate or trace
 *          -> delay + jitter), drawing from CPython's own Mersenne Twister streams (state taken
 *          from random.Random(seed).getstate()), so its verdicts are the reference's, bit for bit.
 *   run()  the loop of emu_process.py: one TUN fd, an optional packet socket of kernel arrival
 *          stamps, a model (this Model, or any object with offer(now_ns, size) -> Verdict, for
 *          schedules), the link log's fd. It returns its counters as a dict.
 *
 * Bounded by construction: arrival stamps live in a ring with a hash index (O(1) match; stamps
 * of packets the TUN never delivered age out), held packets in a FIFO of slots that may grow to
 * MAX_SLOTS (past it a packet is dropped and counted as drop_memory), lateness in a histogram.
 *
 * Timing: ppoll (timer slack 1 ns, set by the caller), waking a margin before a release and
 * polling from there while packets are sparse; the margin follows a quantile of recent wake-up
 * overshoots (quantile 0: never poll). Polling stops past a share of each 100 ms window so the
 * kernel's real-time throttle never pauses the process. With kernel arrival stamps the loop does
 * not wake for arrivals while it holds packets (it reads them in time: see lookahead_ns). A tick
 * (tick_ns) bounds the release wake-ups to one per tick, trading precision for CPU: on a VM each
 * wake-up costs tens of microseconds of CPU of its own (`bench link --load` measures it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EV_DELIVER 0
#define EV_LOSS 1
#define EV_QUEUE 2
#define EV_WRITE_ERROR 3
#define EV_MEMORY 4
#define EV_HELD 5 /* still held when the emulator stopped: never released */
#define EV_AQM 6  /* dropped by the queue discipline's own decision */
static const char *EVENT_NAMES[] = {"deliver",     "drop_loss",    "drop_queue", "write_error",
                                    "drop_memory", "held_at_stop", "drop_aqm"};

/* ---------------------------------------------------------------- CPython's MT19937 ---- */
#define MT_N 624
#define MT_M 397

typedef struct {
    uint32_t mt[MT_N];
    int index;
    int has_gauss;
    double gauss_next;
} MT;

static uint32_t mt_next(MT *r) {
    static const uint32_t mag01[2] = {0x0U, 0x9908b0dfU};
    uint32_t y, *mt = r->mt;
    if (r->index >= MT_N) {
        int kk;
        for (kk = 0; kk < MT_N - MT_M; kk++) {
            y = (mt[kk] & 0x80000000U) | (mt[kk + 1] & 0x7fffffffU);
            mt[kk] = mt[kk + MT_M] ^ (y >> 1) ^ mag01[y & 0x1U];
        }
        for (; kk < MT_N - 1; kk++) {
            y = (mt[kk] & 0x80000000U) | (mt[kk + 1] & 0x7fffffffU);
            mt[kk] = mt[kk + (MT_M - MT_N)] ^ (y >> 1) ^ mag01[y & 0x1U];
        }
        y = (mt[MT_N - 1] & 0x80000000U) | (mt[0] & 0x7fffffffU);
        mt[MT_N - 1] = mt[MT_M - 1] ^ (y >> 1) ^ mag01[y & 0x1U];
        r->index = 0;
    }
    y = mt[r->index++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    y ^= (y >> 18);
    return y;
}

static double mt_random(MT *r) { /* random.random() */
    uint32_t a = mt_next(r) >> 5, b = mt_next(r) >> 6;
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

static double mt_gauss(MT *r) { /* random.gauss(0, 1): the same pair and the same cache */
    if (r->has_gauss) {
        r->has_gauss = 0;
        return r->gauss_next;
    }
    double x2pi = mt_random(r) * (2.0 * M_PI);
    double g2rad = sqrt(-2.0 * log(1.0 - mt_random(r)));
    r->gauss_next = sin(x2pi) * g2rad;
    r->has_gauss = 1;
    return cos(x2pi) * g2rad;
}

/* state: random.Random.getstate() = (3, (624 words..., index), gauss_next or None) */
static int mt_from_state(MT *r, PyObject *state) {
    PyObject *words = NULL, *gauss = NULL;
    long version;
    if (!PyArg_ParseTuple(state, "lOO", &version, &words, &gauss)) return -1;
    if (version != 3 || !PyTuple_Check(words) || PyTuple_GET_SIZE(words) != MT_N + 1) {
        PyErr_SetString(PyExc_ValueError, "not a random.Random state (version 3, 625 words)");
        return -1;
    }
    for (int i = 0; i < MT_N; i++) {
        unsigned long w = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(words, i));
        if (PyErr_Occurred()) return -1;
        r->mt[i] = (uint32_t)w;
    }
    r->index = (int)PyLong_AsLong(PyTuple_GET_ITEM(words, MT_N));
    if (PyErr_Occurred()) return -1;
    r->has_gauss = gauss != Py_None;
    r->gauss_next = r->has_gauss ? PyFloat_AsDouble(gauss) : 0.0;
    return PyErr_Occurred() ? -1 : 0;
}

/* ---------------------------------------------------------------- the model ----------- */
#define OPPORTUNITY_BYTES 1500
#define NS_PER_MS 1000000LL

typedef struct {
    PyObject_HEAD
    int64_t start_ns;
    double ns_per_byte; /* 0: no rate limit */
    int64_t delay_ns;
    double jitter_ns;
    int64_t queue_packets, queue_bytes; /* -1: no limit */
    int64_t queue_ns;                   /* -1: no limit on the wait before the link */
    int loss_kind;                      /* 0 none, 1 bernoulli, 2 gilbert-elliott */
    double p, r, loss_bad, loss_good;
    int bad;
    MT loss_rng, jitter_rng;
    double busy_until;
    int64_t *opp_ms; /* trace opportunities of one period, ms; NULL without a trace */
    int64_t n_opp, period_ms, opp_index, opp_left;
    int64_t *q_exit; /* droptail occupancy: (link exit, bytes) of packets not yet sent */
    int32_t *q_size;
    int64_t q_cap, q_head, q_len, q_bytes;
    int64_t last_release;
} Model;

static void Model_dealloc(Model *m) {
    PyMem_Free(m->opp_ms);
    PyMem_Free(m->q_exit);
    PyMem_Free(m->q_size);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static int64_t opportunity_ns(Model *m, int64_t index) {
    int64_t loop = index / m->n_opp, i = index % m->n_opp;
    return (loop * m->period_ms + m->opp_ms[i]) * NS_PER_MS;
}

static int64_t first_index_at_or_after(Model *m, int64_t t_ns) { /* t_ns >= 0 */
    int64_t period_ns = m->period_ms * NS_PER_MS;
    int64_t loop = t_ns / period_ns;
    int64_t rest = t_ns - loop * period_ns;
    int64_t rest_ms = (rest + NS_PER_MS - 1) / NS_PER_MS;
    int64_t lo = 0, hi = m->n_opp; /* bisect_left */
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (m->opp_ms[mid] < rest_ms) lo = mid + 1;
        else hi = mid;
    }
    int64_t index = loop * m->n_opp + lo;
    while (index > 0 && opportunity_ns(m, index - 1) >= t_ns) index--;
    return index;
}

static int64_t link_exit_trace(Model *m, int64_t now_ns, int64_t size) {
    int64_t rel = now_ns - m->start_ns;
    if (m->opp_index < 0 || opportunity_ns(m, m->opp_index) < rel) {
        m->opp_index = first_index_at_or_after(m, rel > 0 ? rel : 0);
        m->opp_left = OPPORTUNITY_BYTES;
    }
    int64_t remaining = size;
    for (;;) {
        int64_t take = m->opp_left < remaining ? m->opp_left : remaining;
        m->opp_left -= take;
        remaining -= take;
        if (remaining == 0) break;
        m->opp_index++;
        m->opp_left = OPPORTUNITY_BYTES;
    }
    return m->start_ns + opportunity_ns(m, m->opp_index);
}

/* Copy a ring's len elements, oldest first, from src (cap slots, oldest at head) into dst. */
static void unwrap(void *dst, const void *src, size_t elem, int64_t cap, int64_t head,
                   int64_t len) {
    int64_t first = len < cap - head ? len : cap - head; /* up to the end of src */
    if (len <= 0) return;
    memcpy(dst, (const char *)src + head * elem, first * elem);
    memcpy((char *)dst + first * elem, src, (len - first) * elem);
}

/* Grow a ring kept as two parallel arrays (a: elem_a bytes per slot, b: elem_b) from cap to
 * new_cap slots, oldest first at slot 0; -1 (and nothing changed) when memory is short. */
static int grow_rings(void **a, size_t elem_a, void **b, size_t elem_b, int64_t cap,
                      int64_t new_cap, int64_t head, int64_t len) {
    void *na = PyMem_Malloc((size_t)new_cap * elem_a);
    void *nb = PyMem_Malloc((size_t)new_cap * elem_b);
    if (!na || !nb) {
        PyMem_Free(na);
        PyMem_Free(nb);
        return -1;
    }
    unwrap(na, *a, elem_a, cap, head, len);
    unwrap(nb, *b, elem_b, cap, head, len);
    PyMem_Free(*a);
    PyMem_Free(*b);
    *a = na;
    *b = nb;
    return 0;
}

static int queue_push(Model *m, int64_t exit_ns, int64_t size) {
    if (m->q_len == m->q_cap) { /* grow (the queue limits bound it) */
        int64_t cap = m->q_cap ? m->q_cap * 2 : 1024;
        if (grow_rings((void **)&m->q_exit, sizeof(int64_t), (void **)&m->q_size,
                       sizeof(int32_t), m->q_cap, cap, m->q_head, m->q_len) < 0)
            return -1;
        m->q_cap = cap;
        m->q_head = 0;
    }
    int64_t j = (m->q_head + m->q_len) % m->q_cap;
    m->q_exit[j] = exit_ns;
    m->q_size[j] = (int32_t)size;
    m->q_len++;
    m->q_bytes += size;
    return 0;
}

/* The loss model's draw for one packet (LinkModel.loss.lost()). */
static int model_lost(Model *m) {
    if (m->loss_kind == 1) return mt_random(&m->loss_rng) < m->p;
    if (m->loss_kind == 2) {
        int lost = mt_random(&m->loss_rng) < (m->bad ? m->loss_bad : m->loss_good);
        if (m->bad) {
            if (mt_random(&m->loss_rng) < m->r) m->bad = 0;
        } else if (mt_random(&m->loss_rng) < m->p) {
            m->bad = 1;
        }
        return lost;
    }
    return 0;
}

/* One packet's delay with its jitter drawn (LinkModel.delay_at without a schedule). */
static int64_t model_delay(Model *m) {
    int64_t delay = m->delay_ns;
    if (m->jitter_ns) {
        double d = nearbyint((double)delay + (0.0 + mt_gauss(&m->jitter_rng) * m->jitter_ns));
        delay = d > 0 ? (int64_t)d : 0;
    }
    return delay;
}

/* The reference's LinkModel.offer for links without a schedule. -1: out of memory. */
static int model_offer(Model *m, int64_t now_ns, int64_t size, int64_t *exit_out,
                       int64_t *release_out) {
    *exit_out = *release_out = -1;
    if (model_lost(m)) return EV_LOSS;
    int limited = m->queue_packets >= 0 || m->queue_bytes >= 0;
    if (limited) {
        while (m->q_len && m->q_exit[m->q_head] <= now_ns) {
            m->q_bytes -= m->q_size[m->q_head];
            m->q_head = (m->q_head + 1) % m->q_cap;
            m->q_len--;
        }
        if ((m->queue_packets >= 0 && m->q_len >= m->queue_packets) ||
            (m->queue_bytes >= 0 && m->q_bytes + size > m->queue_bytes))
            return EV_QUEUE;
    }
    if (m->queue_ns >= 0) { /* queue_ms: how long this packet would wait for the link */
        double wait = 0;
        if (m->opp_ms) {
            int64_t rel = now_ns - m->start_ns;
            if (m->opp_index >= 0 && opportunity_ns(m, m->opp_index) >= rel)
                wait = (double)(opportunity_ns(m, m->opp_left ? m->opp_index : m->opp_index + 1) -
                                rel);
        } else if (m->busy_until > (double)now_ns) {
            wait = m->busy_until - (double)now_ns;
        }
        if (wait > (double)m->queue_ns) return EV_QUEUE;
    }
    int64_t exit_ns;
    if (m->opp_ms) {
        exit_ns = link_exit_trace(m, now_ns, size);
    } else if (m->ns_per_byte) {
        double start = (double)now_ns > m->busy_until ? (double)now_ns : m->busy_until;
        m->busy_until = start + size * m->ns_per_byte;
        exit_ns = (int64_t)nearbyint(m->busy_until);
    } else {
        exit_ns = now_ns;
    }
    if (limited && queue_push(m, exit_ns, size) < 0) return -1;
    int64_t release = exit_ns + model_delay(m);
    if (release < m->last_release) release = m->last_release;
    m->last_release = release;
    *exit_out = exit_ns;
    *release_out = release;
    return EV_DELIVER;
}

static int get_i64(PyObject *d, const char *key, int64_t dflt, int64_t *out) {
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v || v == Py_None) {
        *out = dflt;
        return 0;
    }
    *out = PyLong_AsLongLong(v);
    return PyErr_Occurred() ? -1 : 0;
}

static int get_f64(PyObject *d, const char *key, double *out) {
    PyObject *v = PyDict_GetItemString(d, key);
    *out = v && v != Py_None ? PyFloat_AsDouble(v) : 0.0;
    return PyErr_Occurred() ? -1 : 0;
}

static int model_init_from(Model *m, PyObject *d);

/* Model(params: dict): the keys testbed.shaping.model.LinkModel.initial_state() returns. */
static int Model_init(Model *m, PyObject *args, PyObject *kwds) {
    PyObject *d;
    if (!PyArg_ParseTuple(args, "O!", &PyDict_Type, &d)) return -1;
    return model_init_from(m, d);
}

static int model_init_from(Model *m, PyObject *d) {
    int64_t loss_kind;
    if (get_i64(d, "start_ns", 0, &m->start_ns) || get_f64(d, "ns_per_byte", &m->ns_per_byte) ||
        get_i64(d, "delay_ns", 0, &m->delay_ns) || get_f64(d, "jitter_ns", &m->jitter_ns) ||
        get_i64(d, "queue_packets", -1, &m->queue_packets) ||
        get_i64(d, "queue_bytes", -1, &m->queue_bytes) ||
        get_i64(d, "queue_ns", -1, &m->queue_ns) ||
        get_i64(d, "loss_kind", 0, &loss_kind) || get_f64(d, "p", &m->p) ||
        get_f64(d, "r", &m->r) || get_f64(d, "loss_bad", &m->loss_bad) ||
        get_f64(d, "loss_good", &m->loss_good))
        return -1;
    m->loss_kind = (int)loss_kind;
    PyObject *ls = PyDict_GetItemString(d, "loss_state");
    PyObject *js = PyDict_GetItemString(d, "jitter_state");
    if (!ls || !js) {
        PyErr_SetString(PyExc_KeyError, "loss_state and jitter_state are required");
        return -1;
    }
    if (mt_from_state(&m->loss_rng, ls) || mt_from_state(&m->jitter_rng, js)) return -1;
    m->busy_until = (double)m->start_ns;
    m->last_release = m->start_ns;
    m->opp_index = -1;
    PyObject *opp = PyDict_GetItemString(d, "opportunities_ms");
    if (opp && opp != Py_None) {
        PyObject *seq = PySequence_Fast(opp, "opportunities_ms must be a sequence");
        if (!seq) return -1;
        m->n_opp = PySequence_Fast_GET_SIZE(seq);
        m->opp_ms = PyMem_Malloc((m->n_opp ? m->n_opp : 1) * sizeof(int64_t));
        for (int64_t i = 0; i < m->n_opp; i++)
            m->opp_ms[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        Py_DECREF(seq);
        if (PyErr_Occurred()) return -1;
        if (m->n_opp == 0 || m->opp_ms[m->n_opp - 1] <= 0) {
            PyErr_SetString(PyExc_ValueError, "a trace needs opportunities and a period > 0");
            return -1;
        }
        m->period_ms = m->opp_ms[m->n_opp - 1];
    }
    return 0;
}

static PyObject *Model_offer(Model *m, PyObject *args) {
    long long now, size;
    int64_t exit_ns, release;
    if (!PyArg_ParseTuple(args, "LL", &now, &size)) return NULL;
    int ev = model_offer(m, now, size, &exit_ns, &release);
    if (ev < 0) return PyErr_NoMemory();
    return Py_BuildValue("(sLL)", EVENT_NAMES[ev], (long long)exit_ns, (long long)release);
}

static PyMethodDef Model_methods[] = {
    {"offer", (PyCFunction)Model_offer, METH_VARARGS,
     "offer(now_ns, size) -> (event, link_exit_ns, release_ns); -1 times when dropped"},
    {NULL, NULL, 0, NULL}};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "testbed.shaping._emucore.Model",
    .tp_basicsize = sizeof(Model),
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The link model without a schedule, compiled (see model.LinkModel).",
    .tp_methods = Model_methods,
    .tp_init = (initproc)Model_init,
    .tp_new = PyType_GenericNew,
};

/* ---------------------------------------------------------------- arrival stamps ------ */
#define STAMP_SNAP 48
#define STAMP_CAP 65536 /* > the TUN's queue (10,000): a pending packet's stamp is still here */
#define STAMP_BUCKETS (2 * STAMP_CAP)
#define STAMP_WALK 64 /* longest hash chain walked (identical heads are rare) */
#define STAMP_BATCH 64
#define MAX_SOCKET_ERRORS_IN_A_ROW 8

typedef struct {
    uint8_t data[STAMP_SNAP];
    int32_t len;
    int32_t consumed;
    int64_t t_ns;   /* CLOCK_MONOTONIC */
    uint64_t next;  /* seq + 1 of the next older entry in the bucket; 0: none */
} Stamp;

typedef struct {
    int fd;
    Stamp *ring;
    uint64_t *buckets; /* seq + 1 of the newest entry; 0: empty */
    uint64_t total;    /* stamps ever stored (the next seq) */
    int64_t offset_ns; /* realtime - monotonic */
    int64_t matched, fallbacks, socket_errors, evicted_unused;
} Stamps;

static uint64_t hash_head(const uint8_t *p, int n) { /* FNV-1a */
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static int64_t mono_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void stamps_resync(Stamps *s) {
    struct timespec r;
    int64_t a = mono_ns();
    clock_gettime(CLOCK_REALTIME, &r);
    int64_t b = mono_ns();
    s->offset_ns = (int64_t)r.tv_sec * 1000000000LL + r.tv_nsec - (a + b) / 2;
}

static void stamps_drain(Stamps *s) {
    struct mmsghdr msgs[STAMP_BATCH];
    struct iovec iov[STAMP_BATCH];
    uint8_t bufs[STAMP_BATCH][STAMP_SNAP];
    char ctrl[STAMP_BATCH][64];
    int in_a_row = 0;
    for (;;) {
        for (int i = 0; i < STAMP_BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = STAMP_SNAP;
            memset(&msgs[i].msg_hdr, 0, sizeof(struct msghdr));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = ctrl[i];
            msgs[i].msg_hdr.msg_controllen = sizeof(ctrl[i]);
        }
        int n = recvmmsg(s->fd, msgs, STAMP_BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            s->socket_errors++; /* e.g. ENETDOWN once after the TUN came up: go on, bounded */
            if (++in_a_row >= MAX_SOCKET_ERRORS_IN_A_ROW) return;
            continue;
        }
        in_a_row = 0;
        for (int i = 0; i < n; i++) {
            struct msghdr *h = &msgs[i].msg_hdr;
            int64_t t = -1;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(c), sizeof ts);
                    t = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec - s->offset_ns;
                }
            }
            if (t < 0) continue;
            uint64_t seq = s->total++;
            Stamp *e = &s->ring[seq % STAMP_CAP];
            if (seq >= STAMP_CAP && !e->consumed) s->evicted_unused++;
            int len = msgs[i].msg_len < STAMP_SNAP ? (int)msgs[i].msg_len : STAMP_SNAP;
            memcpy(e->data, bufs[i], len);
            e->len = len;
            e->consumed = 0;
            e->t_ns = t;
            uint64_t b = hash_head(e->data, len) % STAMP_BUCKETS;
            e->next = s->buckets[b];
            s->buckets[b] = seq + 1;
        }
        if (n < STAMP_BATCH) return;
    }
}

/* The oldest unused stamp whose head is the packet's; -1 when there is none. */
static int64_t stamps_find(Stamps *s, const uint8_t *pkt, int len) {
    int n = len < STAMP_SNAP ? len : STAMP_SNAP;
    uint64_t b = hash_head(pkt, n) % STAMP_BUCKETS;
    uint64_t oldest_valid = s->total > STAMP_CAP ? s->total - STAMP_CAP : 0;
    uint64_t link = s->buckets[b];
    Stamp *found = NULL;
    for (int walked = 0; link && walked < STAMP_WALK; walked++) {
        uint64_t seq = link - 1;
        if (seq < oldest_valid) break; /* overwritten: the chain ends here */
        Stamp *e = &s->ring[seq % STAMP_CAP];
        if (!e->consumed && e->len == n && memcmp(e->data, pkt, n) == 0) found = e;
        link = e->next;
    }
    if (!found) return -1;
    found->consumed = 1;
    return found->t_ns;
}

static int64_t stamps_stamp(Stamps *s, const uint8_t *pkt, int len, int64_t now, int *kernel) {
    int64_t t = stamps_find(s, pkt, len);
    if (t < 0) {
        stamps_drain(s);
        t = stamps_find(s, pkt, len);
    }
    if (t < 0) {
        s->fallbacks++; /* its stamp was lost (socket buffer full, or an error) */
        *kernel = 0;
        return now;
    }
    s->matched++;
    *kernel = 1;
    return t < now ? t : now;
}

/* ---------------------------------------------------------------- held packets -------- */
#define SLOT_BYTES 2048 /* > the links' MTU (1500); TUN without vnet headers gets no GSO */
#define MAX_SLOTS (1 << 19) /* 1 GiB of held packets at most */

typedef struct {
    int64_t release, exit, arrival, seq;
    int32_t len;
    int32_t kernel_stamp;
} Held;

typedef struct {
    uint8_t *bytes; /* cap slots of SLOT_BYTES */
    Held *meta;
    int64_t cap, head, len;
} Fifo;

static int fifo_grow(Fifo *f) {
    int64_t cap = f->cap * 2;
    if (cap > MAX_SLOTS) return -1;
    if (grow_rings((void **)&f->bytes, SLOT_BYTES, (void **)&f->meta, sizeof(Held), f->cap, cap,
                   f->head, f->len) < 0)
        return -1;
    f->cap = cap;
    f->head = 0;
    return 0;
}

/* ---------------------------------------------------------------- the link log -------- */
typedef struct {
    int fd;
    char *buf;
    size_t used, cap;
    int error; /* errno of a failed write (the log is then incomplete; said in the stats) */
} Log;

static void log_flush(Log *l) {
    size_t off = 0;
    while (off < l->used) {
        ssize_t n = write(l->fd, l->buf + off, l->used - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            l->error = errno;
            break;
        }
        off += (size_t)n;
    }
    l->used = 0;
}

static char *put_i64(char *p, int64_t v) {
    char tmp[24];
    int n = 0;
    int neg = v < 0;
    uint64_t u = neg ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (neg) *p++ = '-';
    while (n) *p++ = tmp[--n];
    return p;
}

static char *put_str(char *p, const char *s) {
    while (*s) *p++ = *s++;
    return p;
}

/* seq arrival bytes event link_exit sched actual stamp (times relative to start; "" if none) */
static void log_line(Log *l, int64_t seq, int64_t arrival, int64_t size, int ev, int64_t exit_ns,
                     int64_t sched, int64_t actual, int kernel, int64_t start) {
    if (l->cap - l->used < 256) log_flush(l);
    char *p = l->buf + l->used;
    p = put_i64(p, seq);
    *p++ = '\t';
    p = put_i64(p, arrival - start);
    *p++ = '\t';
    p = put_i64(p, size);
    *p++ = '\t';
    p = put_str(p, EVENT_NAMES[ev]);
    *p++ = '\t';
    if (exit_ns >= 0) p = put_i64(p, exit_ns - start);
    *p++ = '\t';
    if (sched >= 0) p = put_i64(p, sched - start);
    *p++ = '\t';
    if (actual >= 0) p = put_i64(p, actual - start);
    *p++ = '\t';
    *p++ = kernel ? 'k' : 'o';
    *p++ = '\n';
    l->used = (size_t)(p - l->buf);
}

/* ---------------------------------------------------------------- lateness histogram -- */
#define HIST_US 100000 /* 1 us bins up to 100 ms; beyond: one overflow bin + the max */

typedef struct {
    int64_t *bins;
    int64_t n, over, max_ns, stalls;
} Hist;

static void hist_add(Hist *h, int64_t ns) {
    if (ns < 0) ns = 0;
    int64_t us = ns / 1000;
    if (us < HIST_US) h->bins[us]++;
    else h->over++;
    if (ns > h->max_ns) h->max_ns = ns;
    if (ns > 1000000) h->stalls++;
    h->n++;
}

static double hist_q(Hist *h, double q) { /* us, bin's lower edge, as sorted()[int(q*n)] */
    if (!h->n) return -1;
    int64_t rank = (int64_t)(q * h->n);
    if (rank >= h->n) rank = h->n - 1;
    int64_t seen = 0;
    for (int64_t i = 0; i < HIST_US; i++) {
        seen += h->bins[i];
        if (seen > rank) return (double)i;
    }
    return h->max_ns / 1000.0;
}

/* ---------------------------------------------------------------- the loop ------------ */
#define WINDOW_NS 100000000LL
#define MAX_BLOCK_NS 50000000LL
#define COARSE_NS 2000000LL
#define DRAIN_BATCH 64
#define WAKES 256
#define MAX_READ_EVERY_NS 5000000LL /* 5 ms: 415 packets at 1 Gbps wait in the TUN, of 10,000 */
#define MIN_READ_EVERY_NS 200000LL /* below: wake for each arrival */

typedef struct {
    double quantile; /* of recent overshoots: the margin; 0 never polls */
    int64_t pad_ns, min_ns, max_ns;
    int64_t max_spin_pps;
    double spin_budget;
    int64_t lookahead_ns; /* the least delay a packet gets: how late it may be read */
    int64_t tick_ns;      /* 0: wake for each release; else at most one release wake a tick */
} Timing;

#define SHED_ABOVE 0.7 /* busy share of a window past which wake-ups are shed */
#define SHED_BELOW 0.4
#define SHED_TICK_NS 200000LL
#define SHED_TICK_MAX_NS 1000000LL

static int64_t thread_cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int stop_requested(PyObject *stop) {
    PyObject *v = PyList_GET_ITEM(stop, 0);
    return PyObject_IsTrue(v);
}

/* A Python model's verdict: (event code, exit, release); -1 on an exception. */
static int python_offer(PyObject *model, int64_t t, int64_t size, int64_t *exit_ns,
                        int64_t *release) {
    PyObject *v = PyObject_CallMethod(model, "offer", "LL", (long long)t, (long long)size);
    if (!v) return -1;
    PyObject *ev = PyObject_GetAttrString(v, "event");
    PyObject *ex = PyObject_GetAttrString(v, "link_exit_ns");
    PyObject *re = PyObject_GetAttrString(v, "release_ns");
    int code = -1;
    if (ev && ex && re) {
        const char *name = PyUnicode_AsUTF8(ev);
        for (int i = 0; name && i < 3; i++)
            if (strcmp(name, EVENT_NAMES[i]) == 0) code = i;
        if (name && code < 0) PyErr_Format(PyExc_ValueError, "unknown verdict %s", name);
        *exit_ns = PyLong_AsLongLong(ex);
        *release = PyLong_AsLongLong(re);
        if (PyErr_Occurred()) code = -1;
    }
    Py_XDECREF(ev);
    Py_XDECREF(ex);
    Py_XDECREF(re);
    Py_DECREF(v);
    return code;
}

static PyObject *run(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"tun_fd", "stamp_fd", "model", "log_fd", "start_ns", "stop",
                             "quantile", "pad_ns", "min_ns", "max_ns", "max_spin_pps",
                             "spin_budget", "lookahead_ns", "tick_ns", NULL};
    int tun_fd, stamp_fd, log_fd;
    long long start;
    PyObject *model, *stop;
    Timing tm = {0.5, 10000, 0, 150000, 5000, 0.4, 0, 0};
    long long pad = tm.pad_ns, mn = tm.min_ns, mx = tm.max_ns, pps = tm.max_spin_pps, ahead = 0,
              tick = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiOiLO!|dLLLLdLL", kwlist, &tun_fd, &stamp_fd,
                                     &model, &log_fd, &start, &PyList_Type, &stop, &tm.quantile,
                                     &pad, &mn, &mx, &pps, &tm.spin_budget, &ahead, &tick))
        return NULL;
    tm.lookahead_ns = ahead;
    tm.tick_ns = tick;
    if (PyList_GET_SIZE(stop) < 1) {
        PyErr_SetString(PyExc_ValueError, "stop must be a list of one flag");
        return NULL;
    }
    tm.pad_ns = pad, tm.min_ns = mn, tm.max_ns = mx, tm.max_spin_pps = pps;
    Model *native = PyObject_TypeCheck(model, &ModelType) ? (Model *)model : NULL;

    PyObject *result = NULL;
    Stamps st = {0};
    Fifo fifo = {0};
    Log log = {log_fd, NULL, 0, 1 << 20, 0};
    Hist hist = {0};
    int64_t counts[6] = {0};
    int64_t write_errno[134] = {0};
    int64_t wakes[WAKES];
    int n_wakes = 0, wake_pos = 0;
    int64_t overs_total = 0, sleeps = 0, spin_ns_total = 0;
    st.fd = stamp_fd;
    if (stamp_fd >= 0) {
        st.ring = PyMem_Calloc(STAMP_CAP, sizeof(Stamp));
        st.buckets = PyMem_Calloc(STAMP_BUCKETS, sizeof(uint64_t));
        stamps_resync(&st);
    }
    fifo.cap = 1024;
    fifo.bytes = PyMem_Malloc((size_t)fifo.cap * SLOT_BYTES);
    fifo.meta = PyMem_Malloc((size_t)fifo.cap * sizeof(Held));
    log.buf = PyMem_Malloc(log.cap);
    hist.bins = PyMem_Calloc(HIST_US, sizeof(int64_t));
    if ((stamp_fd >= 0 && (!st.ring || !st.buckets)) || !fifo.bytes || !fifo.meta || !log.buf ||
        !hist.bins) {
        PyErr_NoMemory();
        goto done;
    }

    int64_t seq = 0, last_arrival = 0, read_late = 0;
    int64_t margin = tm.quantile > 0 ? tm.max_ns : 0;
    int64_t window_start = mono_ns(), window_packets = 0, window_spin = 0;
    int spin = tm.quantile > 0;
    /* With kernel stamps a packet need not be read the moment it arrives, only before it can be
     * due (lookahead: the least delay the link gives). While packets are held, the loop wakes
     * for releases and reads every read_every_ns instead of waking for each arrival. */
    int64_t read_every = stamp_fd >= 0 ? tm.lookahead_ns / 2 : 0;
    if (read_every > MAX_READ_EVERY_NS) read_every = MAX_READ_EVERY_NS;
    if (read_every < MIN_READ_EVERY_NS) read_every = 0;
    int64_t next_read = 0, last_release_wake = 0;
    int64_t window_cpu = thread_cpu_ns(), shed_tick = 0, shed_windows = 0;
    struct pollfd pfd = {tun_fd, POLLIN, 0};
    for (;;) {
        int64_t now = mono_ns();
        int watch = !read_every || !fifo.len; /* idle: the next packet wakes us */
        int64_t wait = fifo.len ? fifo.meta[fifo.head].release - now : MAX_BLOCK_NS;
        int for_release = fifo.len > 0;
        int64_t tick = tm.tick_ns > shed_tick ? tm.tick_ns : shed_tick;
        if (for_release && tick > 0 && last_release_wake + tick - now > wait)
            wait = last_release_wake + tick - now; /* at most one release wake a tick */
        if (!watch && next_read - now < wait) {
            wait = next_read - now;
            for_release = 0;
        }
        int interrupted = 0;
        if (wait > 0) {
            int64_t sleep_ns;
            int timed = 0;
            if (wait > COARSE_NS) { /* long sleeps wake late: sleep coarse, then again */
                sleep_ns = wait - COARSE_NS / 2;
                if (sleep_ns > MAX_BLOCK_NS) sleep_ns = MAX_BLOCK_NS;
            } else if (!spin || !for_release) {
                sleep_ns = wait;
            } else if (wait > margin) {
                sleep_ns = wait - margin;
                timed = 1;
            } else {
                sleep_ns = 0; /* poll until the release is due */
            }
            struct timespec ts = {sleep_ns / 1000000000LL, sleep_ns % 1000000000LL};
            int64_t t0 = now;
            int r = ppoll(watch ? &pfd : NULL, watch ? 1 : 0, &ts, NULL);
            if (r < 0 && errno == EINTR) interrupted = 1;
            int64_t t1 = mono_ns();
            if (sleep_ns == 0) {
                window_spin += t1 - t0;
                spin_ns_total += t1 - t0;
            } else if (r == 0) {
                sleeps++;
                if (timed) { /* learn how late a wake-up comes */
                    int64_t over = t1 - (t0 + sleep_ns);
                    wakes[wake_pos] = over;
                    wake_pos = (wake_pos + 1) % WAKES;
                    if (n_wakes < WAKES) n_wakes++;
                    overs_total++;
                    if (over + tm.pad_ns > margin && tm.quantile >= 1.0) {
                        margin = over + tm.pad_ns; /* the most precise: widen at once */
                    } else if (overs_total % 32 == 0 && n_wakes >= 32) {
                        int64_t sorted[WAKES];
                        memcpy(sorted, wakes, n_wakes * sizeof(int64_t));
                        qsort(sorted, n_wakes, sizeof(int64_t), cmp_i64);
                        int idx = (int)(tm.quantile * (n_wakes - 1));
                        margin = sorted[idx] + tm.pad_ns;
                    }
                    if (margin > tm.max_ns) margin = tm.max_ns;
                    if (margin < tm.min_ns) margin = tm.min_ns;
                }
            }
        }
        if (interrupted || (seq & 0xFFF) == 0xFFF) {
            if (PyErr_CheckSignals() < 0) goto done;
            if (stop_requested(stop)) break;
        }
        /* read what waits (its stamps say when it came), up to a batch, then serve releases */
        int drained = 0;
        for (int k = 0; k < DRAIN_BATCH; k++) {
            /* no room to hold another packet: read it into a scratch slot and drop it */
            int full = fifo.len == fifo.cap && fifo_grow(&fifo) < 0;
            static uint8_t scratch[SLOT_BYTES];
            int64_t slot = (fifo.head + fifo.len) % fifo.cap;
            uint8_t *buf = full ? scratch : fifo.bytes + slot * SLOT_BYTES;
            ssize_t n = read(tun_fd, buf, SLOT_BYTES);
            if (n <= 0) {
                drained = 1;
                break;
            }
            int64_t t = mono_ns(), read_at = t;
            int kernel = 0;
            if (stamp_fd >= 0) t = stamps_stamp(&st, buf, (int)n, t, &kernel);
            if (t < last_arrival) t = last_arrival; /* the model takes packets in order */
            last_arrival = t;
            int64_t exit_ns, release;
            int ev = native ? model_offer(native, t, n, &exit_ns, &release)
                            : python_offer(model, t, n, &exit_ns, &release);
            if (ev < 0) {
                if (!PyErr_Occurred()) PyErr_NoMemory();
                goto done;
            }
            if (ev == EV_DELIVER && full) ev = EV_MEMORY;
            if (ev == EV_DELIVER) {
                Held *h = &fifo.meta[slot];
                h->release = release;
                h->exit = exit_ns;
                h->arrival = t;
                h->seq = seq;
                h->len = (int32_t)n;
                h->kernel_stamp = kernel;
                fifo.len++;
                if (release < read_at) read_late++; /* read after it was due: released late */
            } else {
                counts[ev]++;
                log_line(&log, seq, t, n, ev, -1, -1, -1, kernel, start);
            }
            seq++;
            window_packets++;
        }
        now = mono_ns();
        next_read = drained ? now + read_every : now; /* a full batch: read again at once */
        if (fifo.len && fifo.meta[fifo.head].release <= now) last_release_wake = now;
        while (fifo.len && fifo.meta[fifo.head].release <= now) {
            Held *h = &fifo.meta[fifo.head];
            int64_t actual = mono_ns(); /* the kernel's forwarding runs inside write() */
            ssize_t w = write(tun_fd, fifo.bytes + fifo.head * SLOT_BYTES, h->len);
            int ev = EV_DELIVER;
            if (w != h->len) {
                ev = EV_WRITE_ERROR;
                int e = w < 0 ? errno : EMSGSIZE;
                write_errno[e > 0 && e < 134 ? e : 0]++;
            }
            counts[ev]++;
            hist_add(&hist, actual - h->release);
            log_line(&log, h->seq, h->arrival, h->len, ev, h->exit, h->release, actual,
                     h->kernel_stamp, start);
            fifo.head = (fifo.head + 1) % fifo.cap;
            fifo.len--;
            now = mono_ns();
        }
        int64_t elapsed = now - window_start;
        if (elapsed >= WINDOW_NS) {
            /* poll only while cheap: never near the RT throttle (95% busy pauses us 50 ms) */
            spin = tm.quantile > 0 && window_packets * 1e9 / elapsed < tm.max_spin_pps;
            /* Near a core's worth of work the RT throttle would pause us for 50 ms: shed
             * wake-ups instead (a tick, doubled while busy, dropped once the load falls). */
            int64_t cpu = thread_cpu_ns();
            double busy = (double)(cpu - window_cpu) / elapsed;
            window_cpu = cpu;
            if (busy > SHED_ABOVE) {
                shed_tick = shed_tick ? shed_tick * 2 : SHED_TICK_NS;
                if (shed_tick > SHED_TICK_MAX_NS) shed_tick = SHED_TICK_MAX_NS;
            } else if (busy < SHED_BELOW) {
                shed_tick = 0;
            }
            if (shed_tick) shed_windows++;
            window_start = now, window_packets = 0, window_spin = 0;
            if (stamp_fd >= 0) stamps_resync(&st);
            if (PyErr_CheckSignals() < 0) goto done;
            if (stop_requested(stop)) break;
        } else if (window_spin > tm.spin_budget * WINDOW_NS) {
            spin = 0;
        }
    }
    for (; fifo.len; fifo.len--) { /* what was read but not yet due: its fate is said too */
        Held *h = &fifo.meta[fifo.head];
        counts[EV_HELD]++;
        log_line(&log, h->seq, h->arrival, h->len, EV_HELD, h->exit, h->release, -1,
                 h->kernel_stamp, start);
        fifo.head = (fifo.head + 1) % fifo.cap;
    }
    log_flush(&log);
    {
        PyObject *errs = PyDict_New();
        for (int e = 0; e < 134; e++) {
            if (!write_errno[e]) continue;
            PyObject *n = PyLong_FromLongLong(write_errno[e]);
            PyDict_SetItemString(errs, e ? strerror(e) : "unknown", n);
            Py_DECREF(n);
        }
        result = Py_BuildValue(
            "{s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:N,s:{s:d,s:d,s:d},s:L,s:{s:L,s:L,s:L,s:L},"
            "s:{s:d,s:L,s:d,s:L,s:L,s:L,s:d},s:i}",
            "packets_in", (long long)seq, "deliver", (long long)counts[0], "drop_loss",
            (long long)counts[1], "drop_queue", (long long)counts[2], "write_error",
            (long long)counts[3], "drop_memory", (long long)counts[4], "held_at_stop", (long long)counts[5],
            "write_errors", errs,
            "lateness_us", "p50", hist_q(&hist, 0.5), "p99", hist_q(&hist, 0.99), "max",
            hist.n ? hist.max_ns / 1000.0 : -1.0, "stalls_over_1ms", (long long)hist.stalls,
            "arrival_stamps", "kernel", (long long)st.matched, "own_clock",
            (long long)st.fallbacks, "socket_errors", (long long)st.socket_errors,
            "evicted_unused", (long long)st.evicted_unused, "wake", "margin_us",
            margin / 1000.0, "sleeps", (long long)sleeps, "poll_s", spin_ns_total / 1e9,
            "held_max_slots", (long long)fifo.cap, "read_every_us", (long long)(read_every / 1000),
            "read_late", (long long)read_late, "shed_s", shed_windows * (WINDOW_NS / 1e9),
            "log_errno", log.error);
    }
done:
    PyMem_Free(st.ring);
    PyMem_Free(st.buckets);
    PyMem_Free(fifo.bytes);
    PyMem_Free(fifo.meta);
    PyMem_Free(log.buf);
    PyMem_Free(hist.bins);
    return result;
}

#include "_emuqueue.c" /* the queue-discipline model and its loop */

static PyMethodDef module_methods[] = {
    {"run", (PyCFunction)(void (*)(void))run, METH_VARARGS | METH_KEYWORDS,
     "run(tun_fd, stamp_fd, model, log_fd, start_ns, stop, ...) -> stats: the emulator loop"},
    {"run_queue", (PyCFunction)(void (*)(void))run_queue, METH_VARARGS | METH_KEYWORDS,
     "run_queue(tun_fd, stamp_fd, model, log_fd, start_ns, stop, ...) -> stats: the loop of a "
     "link with a queue discipline (a QModel)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_emucore",
                                       "The link emulator's hot loop, compiled.", -1,
                                       module_methods};

PyMODINIT_FUNC PyInit__emucore(void) {
    if (PyType_Ready(&ModelType) < 0 || PyType_Ready(&QModelType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&ModelType);
    if (PyModule_AddObject(m, "Model", (PyObject *)&ModelType) < 0) {
        Py_DECREF(&ModelType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&QModelType);
    if (PyModule_AddObject(m, "QModel", (PyObject *)&QModelType) < 0) {
        Py_DECREF(&QModelType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
