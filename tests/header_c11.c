/* lenet.h must compile alone as strict C11 (-std=c11 -pedantic -Werror) and agree with the library. */
#include <lenet/lenet.h>

#include <stdio.h>
#include <string.h>

int main(void)
{
    if (strcmp(lenet_version_string(), LENET_VERSION_STRING) != 0) {
        fprintf(stderr, "headers %s, library %s\n", LENET_VERSION_STRING, lenet_version_string());
        return 1;
    }
    if (LENET_VERSION_NUMBER != LENET_VERSION_MAJOR * 10000 + LENET_VERSION_MINOR * 100 + LENET_VERSION_PATCH)
        return 1;
    return 0;
}
