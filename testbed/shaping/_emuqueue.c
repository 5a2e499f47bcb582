/* A link with a queue discipline, compiled: the model of queue_link.py + aqm.py, and its loop
 * (emu_queue.py's). Included by _emucore.c (it uses its Mersenne Twister, Model, stamps, log).
 *
 * QModel  QueueLinkModel for links without a schedule: loss -> the discipline (drophead, CoDel,
 *         PIE, FQ-CoDel) with the link's limits -> the link (rate or trace) -> delay + jitter.
 *         The same steps in the same order and the same floating-point operations as the pure
 *         model, drawing from the same streams: tests/unit/test_emucore.py holds the two side by
 *         side, packet for packet, for every discipline.
 * run_queue()  the loop: holds arrivals in slots until the model says their fate, marks CE in
 *         the packet's bytes, releases in order, logs link log v3 lines.
 */

#define D_DROPHEAD 1
#define D_CODEL 2
#define D_PIE 3
#define D_FQ 4
#define MTU_BYTES 1500
#define FQ_DROP_BATCH 64
#define NONE_NS INT64_MIN

typedef struct {
    int64_t seq, arrival, tag;
    int32_t size, next;
    uint32_t flow;
    int8_t ect, ce;
} QPkt;

typedef struct {
    int32_t head, tail; /* pool indices; -1: empty */
    int64_t count, bytes;
} QFifo;

typedef struct {
    int64_t target, interval;
    int ecn;
    int64_t first_above_time, drop_next, count, lastcount;
    int dropping;
} CoDelSt;

typedef struct {
    QFifo q;
    CoDelSt cd;
    int64_t deficit;
    int list; /* 0: in no list, 1: new flows, 2: old flows */
    int32_t list_next;
    int used;
} Bucket;

typedef struct {
    int32_t head, tail;
} BList;

typedef struct {
    int64_t seq, tag, exit, release, sojourn;
    int event, ce;
} QOut;

typedef struct {
    PyObject_HEAD
    Model base; /* loss, delay, jitter and the trace's opportunities */
    int disc, ecn;
    int64_t lim_packets, lim_bytes, lim_ns; /* -1: none */
    double ns_per_byte;
    double free; /* rate: when the link is free (-inf: never used) */
    int64_t index, left; /* trace: the opportunity being filled and its bytes left */
    QPkt *pool;
    int32_t pool_cap, free_head;
    QFifo fifo;             /* drophead, codel, pie */
    int64_t packets, bytes; /* the whole discipline's backlog */
    CoDelSt codel;
    int64_t p_target, p_tupdate, p_max_burst, qdelay, qdelay_old, burst_time, dq_tstamp,
        next_update;
    double p_alpha, p_beta, prob, accu;
    MT pie_rng;
    Bucket *buckets;
    int64_t n_flows, quantum;
    BList newl, oldl;
    int64_t last_release, now;
    QOut *out;
    int64_t n_out, out_cap;
    int nomem;
} QModel;

/* --- packets and FIFOs ------------------------------------------------------------------- */
static int32_t qpkt_new(QModel *q) {
    if (q->free_head < 0) {
        int32_t cap = q->pool_cap ? q->pool_cap * 2 : 1024;
        QPkt *pool = PyMem_Realloc(q->pool, (size_t)cap * sizeof(QPkt));
        if (!pool) return -1;
        for (int32_t i = q->pool_cap; i < cap; i++) pool[i].next = i + 1 < cap ? i + 1 : -1;
        q->pool = pool;
        q->free_head = q->pool_cap;
        q->pool_cap = cap;
    }
    int32_t i = q->free_head;
    q->free_head = q->pool[i].next;
    q->pool[i].next = -1;
    return i;
}

static void qpkt_free(QModel *q, int32_t i) {
    q->pool[i].next = q->free_head;
    q->free_head = i;
}

static void fifo_init(QFifo *f) {
    f->head = f->tail = -1;
    f->count = f->bytes = 0;
}

static void fifo_push(QModel *q, QFifo *f, int32_t i) {
    q->pool[i].next = -1;
    if (f->tail >= 0) q->pool[f->tail].next = i;
    else f->head = i;
    f->tail = i;
    f->count++;
    f->bytes += q->pool[i].size;
}

static int32_t fifo_pop(QModel *q, QFifo *f) {
    int32_t i = f->head;
    if (i < 0) return -1;
    f->head = q->pool[i].next;
    if (f->head < 0) f->tail = -1;
    f->count--;
    f->bytes -= q->pool[i].size;
    return i;
}

/* --- outcomes ---------------------------------------------------------------------------- */
static void emit(QModel *q, int32_t i, int event, int64_t exit_ns, int64_t release,
                 int64_t sojourn) {
    if (q->n_out == q->out_cap) {
        int64_t cap = q->out_cap ? q->out_cap * 2 : 256;
        QOut *out = PyMem_Realloc(q->out, (size_t)cap * sizeof(QOut));
        if (!out) {
            q->nomem = 1;
            return;
        }
        q->out = out;
        q->out_cap = cap;
    }
    QPkt *p = &q->pool[i];
    QOut *o = &q->out[q->n_out++];
    o->seq = p->seq;
    o->tag = p->tag;
    o->event = event;
    o->exit = exit_ns;
    o->release = release;
    o->sojourn = sojourn;
    o->ce = p->ce;
}

/* --- the link: rate or trace ------------------------------------------------------------- */
static double server_free_at(QModel *q) {
    Model *m = &q->base;
    if (m->opp_ms) {
        if (q->index < 0) return -INFINITY;
        return (double)(m->start_ns + opportunity_ns(m, q->left ? q->index : q->index + 1));
    }
    return q->free;
}

static void server_wake(QModel *q, int64_t now) {
    Model *m = &q->base;
    if (m->opp_ms) {
        if (server_free_at(q) < (double)now) {
            q->index = first_index_at_or_after(m, now - m->start_ns);
            q->left = OPPORTUNITY_BYTES;
        }
    } else if ((double)now > q->free) {
        q->free = (double)now;
    }
}

static int64_t server_serve(QModel *q, int64_t t, int64_t size) {
    Model *m = &q->base;
    if (m->opp_ms) {
        if (!q->left) {
            q->index++;
            q->left = OPPORTUNITY_BYTES;
        }
        int64_t remaining = size;
        for (;;) {
            int64_t take = q->left < remaining ? q->left : remaining;
            q->left -= take;
            remaining -= take;
            if (!remaining) return m->start_ns + opportunity_ns(m, q->index);
            q->index++;
            q->left = OPPORTUNITY_BYTES;
        }
    }
    q->free = (double)t + size * q->ns_per_byte;
    return (int64_t)nearbyint(q->free);
}

static int64_t server_wait(QModel *q, int64_t now, int64_t backlog) {
    Model *m = &q->base;
    if (m->opp_ms) {
        int64_t index = q->index, left = q->left;
        if (server_free_at(q) < (double)now) {
            index = first_index_at_or_after(m, now - m->start_ns);
            left = OPPORTUNITY_BYTES;
        }
        int64_t start = backlog < left ? index
                                       : index + 1 + (backlog - left) / OPPORTUNITY_BYTES;
        int64_t w = m->start_ns + opportunity_ns(m, start) - now;
        return w > 0 ? w : 0;
    }
    double ahead = q->free - (double)now;
    return (int64_t)nearbyint((ahead > 0.0 ? ahead : 0.0) + backlog * q->ns_per_byte);
}

static int limits_full(QModel *q, int64_t now, int64_t packets, int64_t bytes, int64_t size) {
    return (q->lim_packets >= 0 && packets + 1 > q->lim_packets) ||
           (q->lim_bytes >= 0 && bytes + size > q->lim_bytes) ||
           (q->lim_ns >= 0 && server_wait(q, now, bytes) > q->lim_ns);
}

/* --- CoDel (RFC 8289), as aqm.CoDelState ------------------------------------------------- */
static int64_t control_law(CoDelSt *c, int64_t t) {
    return t + (int64_t)nearbyint((double)c->interval / sqrt((double)c->count));
}

/* pop from f; the backlog compared with the MTU is the whole discipline's (q->bytes) */
static int32_t codel_pop(QModel *q, QFifo *f) {
    int32_t i = fifo_pop(q, f);
    if (i >= 0) {
        q->packets--;
        q->bytes -= q->pool[i].size;
    }
    return i;
}

static int32_t codel_dodequeue(QModel *q, CoDelSt *c, QFifo *f, int64_t now, int *ok) {
    *ok = 0;
    int32_t i = codel_pop(q, f);
    if (i < 0) {
        c->first_above_time = 0;
        return -1;
    }
    int64_t sojourn = now - q->pool[i].arrival;
    if (sojourn < c->target || q->bytes <= MTU_BYTES) {
        c->first_above_time = 0;
        return i;
    }
    if (c->first_above_time == 0) {
        c->first_above_time = now + c->interval;
        return i;
    }
    *ok = now >= c->first_above_time;
    return i;
}

static void drop_now(QModel *q, int32_t i, int event, int64_t now) {
    emit(q, i, event, -1, -1, now - q->pool[i].arrival);
    qpkt_free(q, i);
}

static int32_t codel_dequeue(QModel *q, CoDelSt *c, QFifo *f, int64_t now) {
    int ok;
    int32_t i = codel_dodequeue(q, c, f, now, &ok);
    if (i < 0) {
        c->dropping = 0;
        return -1;
    }
    if (c->dropping) {
        if (!ok) c->dropping = 0;
        while (c->dropping && now >= c->drop_next) {
            c->count++;
            if (c->ecn && q->pool[i].ect) {
                q->pool[i].ce = 1;
                c->drop_next = control_law(c, c->drop_next);
                return i;
            }
            drop_now(q, i, EV_AQM, now);
            i = codel_dodequeue(q, c, f, now, &ok);
            if (i < 0) {
                c->dropping = 0;
                return -1;
            }
            if (!ok) c->dropping = 0;
            else c->drop_next = control_law(c, c->drop_next);
        }
    } else if (ok) {
        if (c->ecn && q->pool[i].ect) {
            q->pool[i].ce = 1;
        } else {
            drop_now(q, i, EV_AQM, now);
            i = codel_dodequeue(q, c, f, now, &ok);
        }
        c->dropping = 1;
        int64_t delta = c->count - c->lastcount;
        int recent = delta > 1 && now - c->drop_next < 16 * c->interval;
        c->count = recent ? delta : 1;
        c->lastcount = c->count;
        c->drop_next = control_law(c, now);
    }
    return i;
}

/* --- PIE (RFC 8033), as aqm.Pie ---------------------------------------------------------- */
static void pie_calculate(QModel *q) {
    int64_t qdelay = q->qdelay, qdelay_old = q->qdelay_old;
    int update_prob = !(qdelay == 0 && q->fifo.count != 0);
    double alpha = q->p_alpha, beta = q->p_beta;
    if (q->prob < 1.0 / 10) {
        alpha /= 2;
        beta /= 2;
        int64_t power = 100;
        while (q->prob < 1.0 / (double)power && power <= 1000000) {
            alpha /= 4;
            beta /= 4;
            power *= 10;
        }
    }
    double delta = alpha * (double)(qdelay - q->p_target) / 1e9 +
                   beta * (double)(qdelay - qdelay_old) / 1e9;
    if (delta > 1.0 / 50 && q->prob >= 1.0 / 10) delta = 1.0 / 50;
    if (qdelay > 250 * NS_PER_MS) delta += 1.0 / 50;
    q->prob += delta;
    if (q->prob > 1.0) {
        q->prob = 1.0;
        update_prob = 0;
    } else if (q->prob < 0) {
        q->prob = 0.0;
    }
    if (qdelay == 0 && qdelay_old == 0 && update_prob) q->prob -= q->prob / 64;
    if ((double)qdelay < (double)q->p_target / 2 && (double)qdelay_old < (double)q->p_target / 2 &&
        q->prob == 0) {
        q->burst_time = q->p_max_burst;
        q->dq_tstamp = NONE_NS;
        q->accu = 0.0;
    }
    q->qdelay_old = qdelay;
}

static void pie_update_to(QModel *q, int64_t now) {
    while (q->next_update <= now) {
        pie_calculate(q);
        q->next_update += q->p_tupdate;
    }
}

static int pie_drop_early(QModel *q) {
    if (q->burst_time > 0) return 0;
    if ((double)q->qdelay < (double)q->p_target / 2 && q->prob < 1.0 / 5) return 0;
    if (q->fifo.bytes < 2 * MTU_BYTES) return 0;
    if (q->prob == 0) q->accu = 0.0;
    q->accu += q->prob;
    if (q->accu < 0.85) return 0;
    if (q->accu >= 8.5) return 1;
    if (mt_random(&q->pie_rng) < q->prob) {
        q->accu = 0.0;
        return 1;
    }
    return 0;
}

/* --- FQ-CoDel (RFC 8290), as aqm.FqCoDel ------------------------------------------------- */
static void blist_append(Bucket *bk, BList *l, int32_t b, int which) {
    bk[b].list_next = -1;
    bk[b].list = which;
    if (l->tail >= 0) bk[l->tail].list_next = b;
    else l->head = b;
    l->tail = b;
}

static int32_t blist_popleft(Bucket *bk, BList *l) {
    int32_t b = l->head;
    l->head = bk[b].list_next;
    if (l->head < 0) l->tail = -1;
    bk[b].list = 0;
    return b;
}

static void fq_drop_fattest(QModel *q, int64_t now) {
    int64_t best = -1, most = -1;
    for (int64_t b = 0; b < q->n_flows; b++)
        if (q->buckets[b].used && q->buckets[b].q.bytes > most) {
            most = q->buckets[b].q.bytes;
            best = b;
        }
    QFifo *f = &q->buckets[best].q;
    int64_t threshold = f->bytes / 2, length = 0;
    int dropped = 0;
    while (f->head >= 0 && dropped < FQ_DROP_BATCH) {
        int32_t i = fifo_pop(q, f);
        q->packets--;
        q->bytes -= q->pool[i].size;
        length += q->pool[i].size;
        dropped++;
        drop_now(q, i, EV_QUEUE, now);
        if (length >= threshold) break;
    }
}

static int32_t fq_dequeue(QModel *q, int64_t now) {
    for (;;) {
        BList *head = q->newl.head >= 0 ? &q->newl : &q->oldl;
        if (head->head < 0) return -1;
        int32_t b = head->head;
        Bucket *bk = &q->buckets[b];
        if (bk->deficit <= 0) {
            bk->deficit += q->quantum;
            blist_popleft(q->buckets, head);
            blist_append(q->buckets, &q->oldl, b, 2);
            continue;
        }
        int32_t i = codel_dequeue(q, &bk->cd, &bk->q, now);
        if (i < 0) {
            blist_popleft(q->buckets, head);
            if (head == &q->newl && q->oldl.head >= 0) blist_append(q->buckets, &q->oldl, b, 2);
            continue;
        }
        bk->deficit -= q->pool[i].size;
        return i;
    }
}

/* --- the discipline ---------------------------------------------------------------------- */
static void disc_enqueue(QModel *q, int64_t now, int32_t i) {
    QPkt *p = &q->pool[i];
    if (q->disc == D_FQ) {
        int64_t b = p->flow % q->n_flows;
        Bucket *bk = &q->buckets[b];
        if (!bk->used) {
            bk->used = 1;
            fifo_init(&bk->q);
            memset(&bk->cd, 0, sizeof bk->cd);
            bk->cd.target = q->codel.target;
            bk->cd.interval = q->codel.interval;
            bk->cd.ecn = q->ecn;
        }
        int full = limits_full(q, now, q->packets, q->bytes, p->size);
        int32_t size = p->size;
        fifo_push(q, &bk->q, i);
        q->packets++;
        q->bytes += size;
        if (!bk->list) {
            blist_append(q->buckets, &q->newl, (int32_t)b, 1);
            bk->deficit = q->quantum;
        }
        if (full) fq_drop_fattest(q, now);
        return;
    }
    if (q->disc == D_PIE) pie_update_to(q, now);
    if (q->disc == D_DROPHEAD) {
        while (q->fifo.head >= 0 && limits_full(q, now, q->fifo.count, q->fifo.bytes, p->size)) {
            int32_t h = fifo_pop(q, &q->fifo);
            q->packets--;
            q->bytes -= q->pool[h].size;
            drop_now(q, h, EV_QUEUE, now);
        }
    }
    if (limits_full(q, now, q->fifo.count, q->fifo.bytes, p->size)) {
        if (q->disc == D_PIE) q->accu = 0.0;
        emit(q, i, EV_QUEUE, -1, -1, -1);
        qpkt_free(q, i);
        return;
    }
    if (q->disc == D_PIE && pie_drop_early(q)) {
        if (q->ecn && p->ect && q->prob <= 0.1) {
            p->ce = 1;
        } else {
            q->accu = 0.0;
            emit(q, i, EV_AQM, -1, -1, -1);
            qpkt_free(q, i);
            return;
        }
    }
    fifo_push(q, &q->fifo, i);
    q->packets++;
    q->bytes += p->size;
}

static int32_t disc_dequeue(QModel *q, int64_t now) {
    if (q->disc == D_FQ) return fq_dequeue(q, now);
    if (q->disc == D_CODEL) return codel_dequeue(q, &q->codel, &q->fifo, now);
    if (q->disc == D_PIE) pie_update_to(q, now);
    int32_t i = fifo_pop(q, &q->fifo);
    if (i < 0) return -1;
    q->packets--;
    q->bytes -= q->pool[i].size;
    if (q->disc == D_PIE) {
        q->qdelay = q->fifo.head >= 0 ? now - q->pool[i].arrival : 0;
        int64_t dtime = q->dq_tstamp == NONE_NS ? 0 : now - q->dq_tstamp;
        q->dq_tstamp = now;
        if (dtime && q->burst_time > 0) {
            q->burst_time -= dtime;
            if (q->burst_time < 0) q->burst_time = 0;
        }
    }
    return i;
}

/* --- the link model: offer and advance, as QueueLinkModel ------------------------------- */
static void qmodel_advance(QModel *q, int64_t now) {
    if (now > q->now) q->now = now;
    while (q->packets) {
        double t = server_free_at(q);
        if (t > (double)now) break;
        int64_t t_ns = (int64_t)nearbyint(t);
        int32_t i = disc_dequeue(q, t_ns);
        if (i < 0) break;
        QPkt *p = &q->pool[i];
        int64_t exit_ns = server_serve(q, t_ns, p->size);
        int64_t release = exit_ns + model_delay(&q->base);
        if (release < q->last_release) release = q->last_release;
        q->last_release = release;
        emit(q, i, EV_DELIVER, exit_ns, release, t_ns - p->arrival);
        qpkt_free(q, i);
    }
}

/* 0, or -1 when memory ran out */
static int qmodel_offer(QModel *q, int64_t now, int64_t seq, int64_t size, uint32_t flow,
                        int ect, int64_t tag) {
    qmodel_advance(q, now);
    int32_t i = qpkt_new(q);
    if (i < 0) return -1;
    QPkt *p = &q->pool[i];
    p->seq = seq;
    p->arrival = now;
    p->tag = tag;
    p->size = (int32_t)size;
    p->flow = flow;
    p->ect = (int8_t)(ect != 0);
    p->ce = 0;
    if (model_lost(&q->base)) {
        emit(q, i, EV_LOSS, -1, -1, -1);
        qpkt_free(q, i);
        return q->nomem ? -1 : 0;
    }
    int was_empty = q->packets == 0;
    disc_enqueue(q, now, i);
    if (was_empty && q->packets) server_wake(q, now);
    qmodel_advance(q, now);
    return q->nomem ? -1 : 0;
}

/* --- the Python type (for the parity test and the loop's set-up) ------------------------- */
static void QModel_dealloc(QModel *q) {
    PyMem_Free(q->base.opp_ms);
    PyMem_Free(q->base.q_exit);
    PyMem_Free(q->base.q_size);
    PyMem_Free(q->pool);
    PyMem_Free(q->buckets);
    PyMem_Free(q->out);
    Py_TYPE(q)->tp_free((PyObject *)q);
}

/* QModel(params): LinkModel.initial_state() and QueueLinkModel.initial_state()'s queue keys */
static int QModel_init(QModel *q, PyObject *args, PyObject *kwds) {
    PyObject *d;
    if (!PyArg_ParseTuple(args, "O!", &PyDict_Type, &d)) return -1;
    if (model_init_from(&q->base, d) < 0) return -1;
    int64_t disc, ecn, flows, quantum;
    if (get_i64(d, "discipline", 0, &disc) || get_i64(d, "ecn", 0, &ecn) ||
        get_i64(d, "queue_packets", -1, &q->lim_packets) ||
        get_i64(d, "queue_bytes", -1, &q->lim_bytes) || get_i64(d, "queue_ns", -1, &q->lim_ns) ||
        get_i64(d, "target_ns", 0, &q->codel.target) ||
        get_i64(d, "interval_ns", 0, &q->codel.interval) ||
        get_i64(d, "tupdate_ns", 0, &q->p_tupdate) ||
        get_i64(d, "max_burst_ns", 0, &q->p_max_burst) || get_f64(d, "alpha", &q->p_alpha) ||
        get_f64(d, "beta", &q->p_beta) || get_i64(d, "flows", 1, &flows) ||
        get_i64(d, "quantum", 1514, &quantum))
        return -1;
    if (disc < D_DROPHEAD || disc > D_FQ || flows < 1 || (disc == D_PIE && q->p_tupdate <= 0)) {
        PyErr_SetString(PyExc_ValueError, "QModel: discipline 1-4, flows >= 1, tupdate > 0");
        return -1;
    }
    q->disc = (int)disc;
    q->ecn = (int)ecn;
    q->codel.ecn = q->ecn;
    q->p_target = q->codel.target;
    q->ns_per_byte = q->base.ns_per_byte;
    q->free = -INFINITY;
    q->index = -1;
    q->left = 0;
    q->free_head = -1;
    fifo_init(&q->fifo);
    q->burst_time = q->p_max_burst;
    q->dq_tstamp = NONE_NS;
    q->next_update = q->base.start_ns + q->p_tupdate;
    q->n_flows = flows;
    q->quantum = quantum;
    q->newl.head = q->newl.tail = q->oldl.head = q->oldl.tail = -1;
    q->last_release = q->now = q->base.start_ns;
    if (disc == D_FQ) {
        q->buckets = PyMem_Calloc((size_t)flows, sizeof(Bucket));
        if (!q->buckets) {
            PyErr_NoMemory();
            return -1;
        }
    }
    PyObject *ps = PyDict_GetItemString(d, "pie_state");
    if (ps && mt_from_state(&q->pie_rng, ps)) return -1;
    return 0;
}

static PyObject *outcomes_list(QModel *q) {
    if (q->nomem) {
        q->nomem = 0;
        q->n_out = 0;
        return PyErr_NoMemory();
    }
    PyObject *list = PyList_New(q->n_out);
    if (!list) return NULL;
    for (int64_t k = 0; k < q->n_out; k++) {
        QOut *o = &q->out[k];
        PyObject *t = Py_BuildValue("(LsLLLO)", (long long)o->seq, EVENT_NAMES[o->event],
                                    (long long)o->exit, (long long)o->release,
                                    (long long)o->sojourn, o->ce ? Py_True : Py_False);
        if (!t) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, k, t);
    }
    q->n_out = 0;
    return list;
}

static PyObject *QModel_offer(QModel *q, PyObject *args) {
    long long now, seq, size;
    unsigned long flow = 0;
    int ect = 0;
    if (!PyArg_ParseTuple(args, "LLL|kp", &now, &seq, &size, &flow, &ect)) return NULL;
    if (qmodel_offer(q, now, seq, size, (uint32_t)flow, ect, seq) < 0) q->nomem = 1;
    return outcomes_list(q);
}

static PyObject *QModel_advance(QModel *q, PyObject *args) {
    long long now;
    if (!PyArg_ParseTuple(args, "L", &now)) return NULL;
    qmodel_advance(q, now);
    return outcomes_list(q);
}

static PyObject *QModel_next_dequeue(QModel *q, PyObject *noargs) {
    if (!q->packets) Py_RETURN_NONE;
    return PyFloat_FromDouble(server_free_at(q));
}

static PyMethodDef QModel_methods[] = {
    {"offer", (PyCFunction)QModel_offer, METH_VARARGS,
     "offer(now_ns, seq, size, flow=0, ect=False) -> [(seq, event, exit, release, sojourn, ce)]"},
    {"advance", (PyCFunction)QModel_advance, METH_VARARGS,
     "advance(now_ns) -> the outcomes of the link's dequeues up to now_ns"},
    {"next_dequeue_ns", (PyCFunction)QModel_next_dequeue, METH_NOARGS,
     "when the link next takes a packet (None: the queue is empty)"},
    {NULL, NULL, 0, NULL}};

static PyTypeObject QModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "testbed.shaping._emucore.QModel",
    .tp_basicsize = sizeof(QModel),
    .tp_dealloc = (destructor)QModel_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A link with a queue discipline, compiled (see queue_link.QueueLinkModel).",
    .tp_methods = QModel_methods,
    .tp_init = (initproc)QModel_init,
    .tp_new = PyType_GenericNew,
};

/* --- packet headers: flow hash and ECN (as ippkt.py) ------------------------------------- */
static uint32_t packet_flow(const uint8_t *p, ssize_t n) {
    uint8_t key[1 + 32 + 4];
    int len = 0;
    if (n >= 20 && p[0] >> 4 == 4) {
        int ihl = (p[0] & 0x0F) * 4;
        uint8_t proto = p[9];
        key[len++] = proto;
        memcpy(key + len, p + 12, 8);
        len += 8;
        if ((proto == 6 || proto == 17 || proto == 132 || proto == 136) && n >= ihl + 4) {
            memcpy(key + len, p + ihl, 4);
            len += 4;
        }
    } else if (n >= 40 && p[0] >> 4 == 6) {
        uint8_t proto = p[6];
        key[len++] = proto;
        memcpy(key + len, p + 8, 32);
        len += 32;
        if ((proto == 6 || proto == 17 || proto == 132 || proto == 136) && n >= 44) {
            memcpy(key + len, p + 40, 4);
            len += 4;
        }
    }
    return (uint32_t)(hash_head(key, len) & 0xFFFFFFFFu);
}

static int packet_ecn(const uint8_t *p, ssize_t n) {
    if (n >= 20 && p[0] >> 4 == 4) return p[1] & 3;
    if (n >= 40 && p[0] >> 4 == 6) return (p[1] >> 4) & 3;
    return 0;
}

static int packet_set_ce(uint8_t *p, ssize_t n) {
    if (!packet_ecn(p, n)) return 0;
    if (p[0] >> 4 == 4) {
        int ihl = (p[0] & 0x0F) * 4;
        p[1] |= 3;
        p[10] = p[11] = 0;
        uint32_t sum = 0;
        for (int k = 0; k + 1 < ihl && k + 1 < n; k += 2) sum += (uint32_t)(p[k] << 8 | p[k + 1]);
        while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
        sum = ~sum & 0xFFFF;
        p[10] = (uint8_t)(sum >> 8);
        p[11] = (uint8_t)(sum & 0xFF);
    } else {
        p[1] |= 3 << 4;
    }
    return 1;
}

/* --- the loop ---------------------------------------------------------------------------- */
typedef struct {
    int64_t seq, arrival, release, exit, sojourn;
    int32_t len, next;
    uint32_t flow;
    int8_t kernel, ecn, ce, state; /* state: 0 free, 1 in the model, 2 awaiting release */
} QSlot;

static const char *ecn_word(int bits, int ce) { return ce ? "ce" : bits ? "ect" : ""; }

/* a v3 line: the v2 columns, then sojourn, flow, ecn */
static void log_line_q(Log *l, QSlot *s, int ev, int64_t actual, int64_t start) {
    if (l->cap - l->used < 320) log_flush(l);
    char *p = l->buf + l->used;
    p = put_i64(p, s->seq);
    *p++ = '\t';
    p = put_i64(p, s->arrival - start);
    *p++ = '\t';
    p = put_i64(p, s->len);
    *p++ = '\t';
    p = put_str(p, EVENT_NAMES[ev]);
    *p++ = '\t';
    if (s->exit >= 0) p = put_i64(p, s->exit - start);
    *p++ = '\t';
    if (s->release >= 0) p = put_i64(p, s->release - start);
    *p++ = '\t';
    if (actual >= 0) p = put_i64(p, actual - start);
    *p++ = '\t';
    *p++ = s->kernel ? 'k' : 'o';
    *p++ = '\t';
    if (s->sojourn >= 0) p = put_i64(p, s->sojourn);
    *p++ = '\t';
    p = put_i64(p, s->flow);
    *p++ = '\t';
    p = put_str(p, ecn_word(s->ecn, s->ce));
    *p++ = '\n';
    l->used = (size_t)(p - l->buf);
}

typedef struct {
    uint8_t *bytes;
    QSlot *meta;
    int32_t cap, free_head;
    int32_t rel_head, rel_tail; /* awaiting release, in release order */
    int64_t rel_len;
} Slots;

static int32_t slot_new(Slots *s) {
    if (s->free_head < 0) {
        int32_t cap = s->cap * 2;
        if (cap > MAX_SLOTS) return -1;
        uint8_t *b = PyMem_Realloc(s->bytes, (size_t)cap * SLOT_BYTES);
        if (!b) return -1;
        s->bytes = b;
        QSlot *m = PyMem_Realloc(s->meta, (size_t)cap * sizeof(QSlot));
        if (!m) return -1;
        s->meta = m;
        for (int32_t i = s->cap; i < cap; i++) {
            m[i].next = i + 1 < cap ? i + 1 : -1;
            m[i].state = 0;
        }
        s->free_head = s->cap;
        s->cap = cap;
    }
    int32_t i = s->free_head;
    s->free_head = s->meta[i].next;
    s->meta[i].next = -1;
    return i;
}

static void slot_free(Slots *s, int32_t i) {
    s->meta[i].state = 0;
    s->meta[i].next = s->free_head;
    s->free_head = i;
}

typedef struct {
    int64_t counts[7], ecn_marked;
    int64_t *sojourn;
    int64_t n_sojourn, cap_sojourn;
} QCounts;

/* the model's outcomes: queue deliveries for release (marked as said), log and free drops */
static int settle(QModel *q, Slots *s, Log *log, QCounts *c, int64_t start) {
    for (int64_t k = 0; k < q->n_out; k++) {
        QOut *o = &q->out[k];
        int32_t i = (int32_t)o->tag;
        QSlot *m = &s->meta[i];
        m->sojourn = o->sojourn;
        if (o->event == EV_DELIVER) {
            m->exit = o->exit;
            m->release = o->release;
            if (o->ce && packet_set_ce(s->bytes + (size_t)i * SLOT_BYTES, m->len)) {
                m->ce = 1;
                c->ecn_marked++;
            }
            if (c->n_sojourn == c->cap_sojourn) {
                int64_t cap = c->cap_sojourn ? c->cap_sojourn * 2 : 65536;
                int64_t *a = PyMem_Realloc(c->sojourn, (size_t)cap * sizeof(int64_t));
                if (!a) return -1;
                c->sojourn = a;
                c->cap_sojourn = cap;
            }
            c->sojourn[c->n_sojourn++] = o->sojourn;
            m->state = 2;
            m->next = -1;
            if (s->rel_tail >= 0) s->meta[s->rel_tail].next = i;
            else s->rel_head = i;
            s->rel_tail = i;
            s->rel_len++;
        } else {
            c->counts[o->event]++;
            log_line_q(log, m, o->event, -1, start);
            slot_free(s, i);
        }
    }
    q->n_out = 0;
    return q->nomem ? -1 : 0;
}

static double sorted_q(int64_t *a, int64_t n, double p) { /* us, as sorted()[int(p*n)] */
    if (!n) return -1;
    int64_t k = (int64_t)(p * n);
    if (k >= n) k = n - 1;
    return a[k] / 1000.0;
}

static PyObject *run_queue(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"tun_fd", "stamp_fd", "model", "log_fd", "start_ns", "stop",
                             "lookahead_ns", NULL};
    int tun_fd, stamp_fd, log_fd;
    long long start, lookahead = 0;
    PyObject *stop;
    QModel *q;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiO!iLO!|L", kwlist, &tun_fd, &stamp_fd,
                                     &QModelType, &q, &log_fd, &start, &PyList_Type, &stop,
                                     &lookahead))
        return NULL;
    if (PyList_GET_SIZE(stop) < 1) {
        PyErr_SetString(PyExc_ValueError, "stop must be a list of one flag");
        return NULL;
    }
    PyObject *result = NULL;
    Stamps st = {0};
    Slots s = {0};
    Log log = {log_fd, NULL, 0, 1 << 20, 0};
    Hist hist = {0};
    QCounts c = {0};
    st.fd = stamp_fd;
    if (stamp_fd >= 0) {
        st.ring = PyMem_Calloc(STAMP_CAP, sizeof(Stamp));
        st.buckets = PyMem_Calloc(STAMP_BUCKETS, sizeof(uint64_t));
        stamps_resync(&st);
    }
    s.cap = 1024;
    s.bytes = PyMem_Malloc((size_t)s.cap * SLOT_BYTES);
    s.meta = PyMem_Malloc((size_t)s.cap * sizeof(QSlot));
    log.buf = PyMem_Malloc(log.cap);
    hist.bins = PyMem_Calloc(HIST_US, sizeof(int64_t));
    if ((stamp_fd >= 0 && (!st.ring || !st.buckets)) || !s.bytes || !s.meta || !log.buf ||
        !hist.bins) {
        PyErr_NoMemory();
        goto done;
    }
    for (int32_t i = 0; i < s.cap; i++) {
        s.meta[i].next = i + 1 < s.cap ? i + 1 : -1;
        s.meta[i].state = 0;
    }
    s.free_head = 0;
    s.rel_head = s.rel_tail = -1;

    /* With kernel stamps a dequeue need not be handled the moment it is due: only before its
     * release can be (it is at least the link's least delay later), and packets read late keep
     * their true arrival times. Without them, wake for every dequeue and every arrival. */
    int64_t slack = stamp_fd >= 0 ? lookahead / 2 : 0;
    if (slack > MAX_READ_EVERY_NS) slack = MAX_READ_EVERY_NS;
    if (slack < MIN_READ_EVERY_NS) slack = 0;
    int64_t seq = 0, last_arrival = 0, margin = 150000, next_read = 0;
    int64_t window_start = mono_ns(), window_packets = 0, window_spin = 0;
    int spin = 1;
    struct pollfd pfd = {tun_fd, POLLIN, 0};
    for (;;) {
        int64_t now = mono_ns();
        int64_t rel = s.rel_head >= 0 ? s.meta[s.rel_head].release : INT64_MAX;
        int64_t deq = INT64_MAX;
        if (q->packets) {
            double f = server_free_at(q);
            deq = f > 9e18 ? INT64_MAX : (int64_t)f + slack;
        }
        int holding = q->packets || s.rel_head >= 0;
        int watch = !slack || !holding;
        int64_t wake = rel < deq ? rel : deq;
        if (!watch && next_read < wake) wake = next_read;
        int64_t wait = wake == INT64_MAX ? MAX_BLOCK_NS : wake - now;
        int release_next = s.rel_head >= 0 && rel <= deq && rel <= (watch ? rel : next_read);
        int interrupted = 0;
        if (wait > 0) {
            int64_t sleep_ns;
            int timed = 0;
            if (wait > COARSE_NS) {
                sleep_ns = wait - COARSE_NS / 2;
                if (sleep_ns > MAX_BLOCK_NS) sleep_ns = MAX_BLOCK_NS;
            } else if (!spin || !release_next) {
                sleep_ns = wait;
            } else if (wait > margin) {
                sleep_ns = wait - margin;
                timed = 1;
            } else {
                sleep_ns = 0;
            }
            struct timespec ts = {sleep_ns / 1000000000LL, sleep_ns % 1000000000LL};
            int64_t t0 = now;
            int r = ppoll(watch ? &pfd : NULL, watch ? 1 : 0, &ts, NULL);
            if (r < 0 && errno == EINTR) interrupted = 1;
            int64_t t1 = mono_ns();
            if (sleep_ns == 0) window_spin += t1 - t0;
            else if (r == 0 && timed) {
                int64_t over = t1 - (t0 + sleep_ns) + 15000;
                margin = over < 40000 ? 40000 : over > 300000 ? 300000 : over;
            }
        }
        if (interrupted || (seq & 0xFFF) == 0xFFF) {
            if (PyErr_CheckSignals() < 0) goto done;
            if (stop_requested(stop)) break;
        }
        int64_t began = mono_ns();
        int drained = 0;
        for (int k = 0; k < 16 * DRAIN_BATCH; k++) {
            int32_t i = slot_new(&s);
            static uint8_t scratch[SLOT_BYTES];
            uint8_t *buf = i < 0 ? scratch : s.bytes + (size_t)i * SLOT_BYTES;
            ssize_t n = read(tun_fd, buf, SLOT_BYTES);
            if (n <= 0) {
                if (i >= 0) slot_free(&s, i);
                drained = 1;
                break;
            }
            int64_t t = mono_ns();
            int kernel = 0;
            if (stamp_fd >= 0) t = stamps_stamp(&st, buf, (int)n, t, &kernel);
            if (t < last_arrival) t = last_arrival;
            if (t < q->now) t = q->now;
            last_arrival = t;
            window_packets++;
            if (i < 0) { /* no room to hold it: said, not silently lost */
                QSlot tmp = {seq, t, -1, -1, -1, (int32_t)n, -1, 0, (int8_t)kernel, 0, 0, 0};
                c.counts[EV_MEMORY]++;
                log_line_q(&log, &tmp, EV_MEMORY, -1, start);
                seq++;
                continue;
            }
            QSlot *m = &s.meta[i];
            m->seq = seq;
            m->arrival = t;
            m->len = (int32_t)n;
            m->kernel = (int8_t)kernel;
            m->ecn = (int8_t)packet_ecn(buf, n);
            m->ce = 0;
            m->exit = m->release = m->sojourn = -1;
            m->flow = packet_flow(buf, n);
            m->state = 1;
            if (qmodel_offer(q, t, seq, n, m->flow, m->ecn != 0, i) < 0 ||
                settle(q, &s, &log, &c, start) < 0) {
                PyErr_NoMemory();
                goto done;
            }
            seq++;
        }
        if (drained) {
            next_read = mono_ns() + slack;
            qmodel_advance(q, began);
            if (settle(q, &s, &log, &c, start) < 0) {
                PyErr_NoMemory();
                goto done;
            }
        }
        now = mono_ns();
        while (s.rel_head >= 0 && s.meta[s.rel_head].release <= now) {
            int32_t i = s.rel_head;
            QSlot *m = &s.meta[i];
            int64_t actual = mono_ns();
            ssize_t w = write(tun_fd, s.bytes + (size_t)i * SLOT_BYTES, m->len);
            int ev = w == m->len ? EV_DELIVER : EV_WRITE_ERROR;
            c.counts[ev]++;
            hist_add(&hist, actual - m->release);
            log_line_q(&log, m, ev, actual, start);
            s.rel_head = m->next;
            if (s.rel_head < 0) s.rel_tail = -1;
            s.rel_len--;
            slot_free(&s, i);
            now = mono_ns();
        }
        int64_t elapsed = now - window_start;
        if (elapsed >= WINDOW_NS) {
            spin = window_packets * 1e9 / elapsed < 5000;
            window_start = now, window_packets = 0, window_spin = 0;
            if (stamp_fd >= 0) stamps_resync(&st);
            if (PyErr_CheckSignals() < 0) goto done;
            if (stop_requested(stop)) break;
        } else if (window_spin > 0.4 * WINDOW_NS) {
            spin = 0;
        }
    }
    for (int32_t i = 0; i < s.cap; i++) { /* read but never released: their fate is said too */
        if (!s.meta[i].state) continue;
        c.counts[EV_HELD]++;
        log_line_q(&log, &s.meta[i], EV_HELD, -1, start);
    }
    log_flush(&log);
    qsort(c.sojourn, (size_t)c.n_sojourn, sizeof(int64_t), cmp_i64);
    result = Py_BuildValue(
        "{s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:{s:d,s:d,s:d},s:L,s:{s:d,s:d,s:d,s:d},"
        "s:{s:L,s:L,s:L,s:L},s:L,s:i}",
        "packets_in", (long long)seq, "deliver", (long long)c.counts[EV_DELIVER], "drop_loss",
        (long long)c.counts[EV_LOSS], "drop_queue", (long long)c.counts[EV_QUEUE], "drop_aqm",
        (long long)c.counts[EV_AQM], "write_error", (long long)c.counts[EV_WRITE_ERROR],
        "drop_memory", (long long)c.counts[EV_MEMORY], "held_at_stop",
        (long long)c.counts[EV_HELD], "ecn_marked", (long long)c.ecn_marked, "lateness_us",
        "p50", hist_q(&hist, 0.5), "p99", hist_q(&hist, 0.99), "max",
        hist.n ? hist.max_ns / 1000.0 : -1.0, "stalls_over_1ms", (long long)hist.stalls,
        "sojourn_us", "p50", sorted_q(c.sojourn, c.n_sojourn, 0.5), "p95",
        sorted_q(c.sojourn, c.n_sojourn, 0.95), "p99", sorted_q(c.sojourn, c.n_sojourn, 0.99),
        "max", c.n_sojourn ? c.sojourn[c.n_sojourn - 1] / 1000.0 : -1.0, "arrival_stamps",
        "kernel", (long long)st.matched, "own_clock", (long long)st.fallbacks, "socket_errors",
        (long long)st.socket_errors, "evicted_unused", (long long)st.evicted_unused,
        "slack_us", (long long)(slack / 1000), "log_errno", log.error);
done:
    PyMem_Free(st.ring);
    PyMem_Free(st.buckets);
    PyMem_Free(s.bytes);
    PyMem_Free(s.meta);
    PyMem_Free(log.buf);
    PyMem_Free(hist.bins);
    PyMem_Free(c.sojourn);
    return result;
}
