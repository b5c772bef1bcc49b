/* A small persistent thread pool for the library's parallel loops.
 *
 * Why not OpenMP: libgomp spin-waits at barriers unless OMP_WAIT_POLICY is set before it loads, which a library
 * cannot do; on a busy machine (or inside a host program with its own threads) spinning workers burn the time slices
 * the real work needs (measured: 2 threads 3x slower than 1 under load).  These workers sleep on a condition
 * variable, take loop indices from an atomic counter (so a preempted worker does not hold others back), are
 * recreated after fork() and joined when the library is unloaded.
 *
 * One parallel loop runs at a time; a caller that finds the pool busy (e.g. lenet_model_predict from many threads)
 * runs its loop on its own thread, which is what it should do when the cores are already taken.
 *
 * A training step is three parallel loops a few hundred microseconds apart, and waking a sleeping thread costs tens
 * of microseconds on these VMs: so a worker that finishes a loop, and a caller waiting for its workers, first spin
 * for a few tens of microseconds (SPIN_ROUNDS pauses) before they sleep.  That short spin is all a busy machine
 * loses. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "core/internal.h"

#define MAX_WORKERS 256
/* Pause instructions spun before sleeping: about 30 us on AMD Zen, 80 us on recent Intel cores. */
#define SPIN_ROUNDS 2000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static struct {
    pthread_mutex_t job_lock;   /* held by the caller for the whole of one parallel loop */
    pthread_mutex_t mutex;      /* protects everything below */
    pthread_cond_t wake, done;
    pthread_t threads[MAX_WORKERS];
    int started;                /* workers created in this process */
    pid_t pid;                  /* process that created them: a forked child has none */
    atomic_ulong generation;    /* bumped per loop (under mutex); workers run each generation once */
    bool shutdown;
    lenet_task_fn fn;
    void *ctx;
    int count, helpers;
    atomic_int running;         /* helpers still in the loop; the one that ends it signals under mutex */
    atomic_int next;
} pool = {.job_lock = PTHREAD_MUTEX_INITIALIZER, .mutex = PTHREAD_MUTEX_INITIALIZER,
          .wake = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static void run_indices(lenet_task_fn fn, void *ctx, int count, int worker)
{
    for (int i; (i = atomic_fetch_add(&pool.next, 1)) < count;)
        fn(ctx, i, worker);
}

static void *worker_main(void *arg)
{
    const int id = (int)(intptr_t)arg; /* 1.. : the caller is worker 0 */
    unsigned long seen = 0;
    pthread_mutex_lock(&pool.mutex);
    for (;;) {
        if (!pool.shutdown && atomic_load(&pool.generation) == seen) {
            /* Spin for the next loop before sleeping; the fields it publishes are read under the mutex below. */
            pthread_mutex_unlock(&pool.mutex);
            for (int r = 0; r < SPIN_ROUNDS && atomic_load_explicit(&pool.generation, memory_order_relaxed) == seen; r++)
                cpu_relax();
            pthread_mutex_lock(&pool.mutex);
        }
        while (!pool.shutdown && (atomic_load(&pool.generation) == seen || id > pool.helpers))
            pthread_cond_wait(&pool.wake, &pool.mutex);
        if (pool.shutdown)
            break;
        seen = atomic_load(&pool.generation);
        lenet_task_fn fn = pool.fn;
        void *ctx = pool.ctx;
        int count = pool.count;
        pthread_mutex_unlock(&pool.mutex);
        run_indices(fn, ctx, count, id);
        pthread_mutex_lock(&pool.mutex);
        if (atomic_fetch_sub(&pool.running, 1) == 1)
            pthread_cond_signal(&pool.done);
    }
    pthread_mutex_unlock(&pool.mutex);
    return NULL;
}

/* A forked child inherits the bookkeeping but not the threads, and the condition variables still count the
 * parent's sleeping workers as waiters: start afresh.  Runs in the child's only thread, right after fork. */
static void reset_in_child(void)
{
    pthread_mutex_init(&pool.job_lock, NULL);
    pthread_mutex_init(&pool.mutex, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.started = 0;
    pool.shutdown = false;
    pool.pid = getpid();
}

static void register_fork_handler(void)
{
    /* glibc unregisters a library's handlers when it is unloaded, so this never outlives the code it calls. */
    pthread_atfork(NULL, NULL, reset_in_child);
}

/* Starts workers up to `wanted` (fewer if the system refuses: the loop then simply uses fewer threads). */
static int ensure_workers(int wanted)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_fork_handler);
    pool.pid = getpid();
    while (pool.started < wanted && pool.started < MAX_WORKERS) {
        if (pthread_create(&pool.threads[pool.started], NULL, worker_main, (void *)(intptr_t)(pool.started + 1)) != 0)
            break;
        pool.started++;
    }
    return pool.started;
}

void lenet__parallel_for(int count, int threads, lenet_task_fn fn, void *ctx)
{
    if (threads > count)
        threads = count;
    if (threads <= 1 || pthread_mutex_trylock(&pool.job_lock) != 0) {
        for (int i = 0; i < count; i++)
            fn(ctx, i, 0);
        return;
    }
    pthread_mutex_lock(&pool.mutex);
    int helpers = ensure_workers(threads - 1);
    if (helpers > threads - 1)
        helpers = threads - 1;
    pool.fn = fn;
    pool.ctx = ctx;
    pool.count = count;
    pool.helpers = helpers;
    atomic_store(&pool.running, helpers);
    atomic_store(&pool.next, 0);
    atomic_fetch_add(&pool.generation, 1);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mutex);

    run_indices(fn, ctx, count, 0);

    for (int r = 0; r < SPIN_ROUNDS && atomic_load(&pool.running) > 0; r++)
        cpu_relax();
    pthread_mutex_lock(&pool.mutex);
    while (atomic_load(&pool.running) > 0)
        pthread_cond_wait(&pool.done, &pool.mutex);
    pthread_mutex_unlock(&pool.mutex);
    pthread_mutex_unlock(&pool.job_lock);
}

/* Workers run library code: they must be gone before the library is unmapped (dlclose) or the process exits. */
__attribute__((destructor)) static void stop_workers(void)
{
    if (pool.started == 0 || pool.pid != getpid())
        return;
    pthread_mutex_lock(&pool.mutex);
    pool.shutdown = true;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mutex);
    for (int i = 0; i < pool.started; i++)
        pthread_join(pool.threads[i], NULL);
    pool.started = 0;
}
