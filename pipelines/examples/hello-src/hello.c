/* The source of the kiln demo pipeline (examples/hello.yaml). */
#include <stdio.h>

int main(void)
{
	if (puts("hello from kiln") == EOF)
		return 1;
	return 0;
}
