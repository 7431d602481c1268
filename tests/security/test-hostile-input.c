#include "security-common.h"
int main(int argc, char **argv) { sec_helper_main_if_requested(argc, argv); g_test_init(&argc, &argv, NULL); return g_test_run(); }
