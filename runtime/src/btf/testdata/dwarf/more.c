/* A second compilation unit redefining some of types.c's structs, as every
 * kernel file does with its headers: the converted BTF must hold them once. */
struct list_head {
	struct list_head *next, *prev;
};

struct flags {
	unsigned int a : 1;
	unsigned int b : 3;
	int c : 5;
	unsigned char d : 2;
	unsigned long long wide : 40;
	unsigned int : 0;
	unsigned short after;
	enum color { RED, GREEN = 5, BLUE } e : 4;
};

struct only_here {
	struct list_head node;
	struct flags *fl;
	int (*cmp)(const struct only_here *a, const struct only_here *b);
};

struct only_here more_instance;
struct list_head more_list;
