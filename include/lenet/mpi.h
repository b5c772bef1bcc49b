/**
 * @file mpi.h
 * @brief Data-parallel training over MPI: the communicator of a model's training loop.
 *
 * Installed only when liblenet is built with MPI (`meson setup -Dmpi=enabled`); it is the one public header that
 * mentions MPI, and lenet.h does not include it.  Compile programs that include it with the MPI compiler wrapper
 * (`mpicc`) or MPI's flags.  docs/distributed.md explains how to run on a cluster and what the exchange costs.
 *
 * Every process holds the whole model, and iterates the same global batches (the same data set, batch size and
 * seed); each batch is cut into liblenet's fixed chunks of 16 samples and process r of N runs a contiguous block of
 * them.  Gradient sums and BatchNorm batch statistics are exchanged and added in global chunk order, and the samples'
 * loss terms are gathered and added in sample order: N processes with T threads each give bit for bit the weights,
 * losses, metrics and checkpoints of one process with one thread.
 */
#ifndef LENET_MPI_H
#define LENET_MPI_H

#include <mpi.h>

#include "lenet/export.h"
#include "lenet/model.h"
#include "lenet/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Makes the model's training loop data-parallel over the processes of @p comm, or in-process again with
 * MPI_COMM_NULL.  Collective over @p comm: every process calls it with its own copy of the model.
 *
 * The model keeps a duplicate of @p comm (MPI_Comm_dup, with MPI_ERRORS_RETURN set on the duplicate, so a failed
 * MPI call becomes a status instead of an abort) and frees it when it is detached (MPI_COMM_NULL, or another
 * communicator) or when the model is freed.  Those calls are then collective too, and must come before
 * MPI_Finalize().  The caller's @p comm may be freed right after this call.
 *
 * With a communicator:
 * - lenet_train_epoch(), lenet_train_epoch_with(), lenet_evaluate() and lenet_evaluate_with() share each batch with
 *   the other processes; all of them must call them together, with models, optimizers and iterators made alike
 *   (same layers, seed, optimizer settings, data set size, batch size, shuffling and iterator seed).  The first batch
 *   of each pass checks that they are (parameters, buffers, optimizer state, iterator state, batch size) and
 *   otherwise fails on every process with LENET_ESTATE naming what differs.  The metrics are the whole batch's on
 *   every process.  After a pass, lenet_model_activation() holds this process's samples only (all of the output's
 *   with a criterion); the gradients are the whole batch's.
 * - lenet_model_save() and lenet_checkpoint_save() write the file on rank 0 only (crash-safely, as always); every
 *   process returns rank 0's status.  lenet_model_load_weights() and lenet_checkpoint_load() read on every process,
 *   each from the path it passes, and change nothing on any process unless every process succeeded.
 * - lenet_model_forward(), lenet_model_backward(), lenet_model_predict() and the other calls stay in-process.
 * - A call that fails on one process (a bad file, a non-finite loss in its chunks, memory) fails on every process
 *   with the same status and the message "rank r of N: ..." of the failing process (the first failure in the order
 *   one process would have met them); no process is left waiting.  When MPI itself fails (a process died), the
 *   call returns LENET_EIO naming the MPI function, and so does every later call that would exchange data: detach
 *   the communicator.
 *
 * Threads: liblenet calls MPI only from the thread that calls it (its worker threads never do), so MPI initialised
 * with MPI_THREAD_FUNNELED is enough when that is the main thread; MPI_THREAD_SERIALIZED otherwise.  Set the threads
 * per process with lenet_threads_set() or LENET_NUM_THREADS: the default, every online CPU, oversubscribes a
 * machine running several processes.
 *
 * @return LENET_OK; LENET_EINVAL for a NULL model (on any process: every process then fails) or an
 *         intercommunicator; LENET_ESTATE if MPI is not initialised or already finalised; LENET_EIO if an MPI call
 *         fails; LENET_ENOMEM.  On failure the model keeps the communicator it had.
 */
LENET_API lenet_status lenet_model_set_comm(lenet_model *m, MPI_Comm comm);

#ifdef __cplusplus
}
#endif

#endif /* LENET_MPI_H */
