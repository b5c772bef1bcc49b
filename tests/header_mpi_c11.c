/* lenet/mpi.h compiles alone as strict C11 in an MPI build, and lenet_model_set_comm refuses to run before
 * MPI_Init instead of calling into an uninitialised MPI. */
#include <lenet/mpi.h>

int main(void)
{
    return lenet_model_set_comm(NULL, MPI_COMM_WORLD) == LENET_ESTATE ? 0 : 1;
}
