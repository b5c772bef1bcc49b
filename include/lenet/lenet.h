/**
 * @file lenet.h
 * @brief The whole public API of liblenet: include this one header.
 */
#ifndef LENET_LENET_H
#define LENET_LENET_H

#include "lenet/export.h"
#include "lenet/version.h"
#include "lenet/status.h"
#include "lenet/tensor.h"
#include "lenet/layer.h"
#include "lenet/model.h"
#include "lenet/loss.h"
#include "lenet/criterion.h"
#include "lenet/optim.h"
#include "lenet/data.h"
#include "lenet/train.h"
#include "lenet/io.h"
#include "lenet/threads.h"
#include "lenet/plan.h"
#include "lenet/lenet5.h"

#endif /* LENET_LENET_H */
