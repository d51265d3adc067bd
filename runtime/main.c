/* main.c - the dhrun executable: all the work is in host.c. */
#include "dhrun.h"

int main(int argc, char **argv)
{
    return dhrun_main(argc, argv);
}
