/**
 * @file export.h
 * @brief Symbol visibility for the public API of liblenet.
 */
#ifndef LENET_EXPORT_H
#define LENET_EXPORT_H

/**
 * @def LENET_API
 * Marks a declaration as part of the public ABI.  The library is compiled with hidden visibility, so only
 * declarations carrying this macro are exported from liblenet.so.  Users never define LENET_BUILDING.
 */
#if defined(LENET_BUILDING) && (defined(__GNUC__) || defined(__clang__))
#define LENET_API __attribute__((visibility("default")))
#else
#define LENET_API
#endif

#endif /* LENET_EXPORT_H */
