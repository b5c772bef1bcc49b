/* What the IDX targets do with a data set that opened: every accessor and a full pass of an iterator, so the
 * fuzzer also reaches the code that trusts the header once it was validated. */
#ifndef LENET_FUZZ_EXERCISE_H
#define LENET_FUZZ_EXERCISE_H

#include <lenet/lenet.h>

void fuzz_exercise_dataset(lenet_dataset *d);

#endif /* LENET_FUZZ_EXERCISE_H */
