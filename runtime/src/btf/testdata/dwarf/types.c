/* Types the DWARF to BTF test converts and compares with `pahole -J`.
 * Compiled at test time (clang and gcc, DWARF 4 and 5); every type is reached
 * from `everything` or a function so that the compiler emits it. */
#include <stdarg.h>

typedef unsigned char u8;
typedef unsigned int u32;
typedef long long s64;
typedef unsigned long long u64;
typedef _Bool bool_t;

struct opaque;                    /* forward-declared, never defined */
union opaque_u;

enum color { RED, GREEN = 5, BLUE };
enum negative { MINUS = -3, ZERO = 0, PLUS = 7 };
enum wide { SMALL = 1, HUGE = 0x1234567890ULL };
enum signed_wide { LOW = -0x100000000LL, HIGH = 1 };
typedef enum { ANON_A, ANON_B } anon_enum_t;
enum wide_values { WV_NEG = -1, WV_128 = 128, WV_200 = 200, WV_40000 = 40000 };
enum top_bit { TOP = 1ULL << 63, NEXT = 1ULL << 62 };

struct list_head {
	struct list_head *next, *prev;
};

struct flags {
	unsigned int a : 1;
	unsigned int b : 3;
	int c : 5;
	u8 d : 2;
	unsigned long long wide : 40;
	unsigned int : 0;
	unsigned short after;
	enum color e : 4;
};

union value {
	s64 i;
	double d;
	float f;
	char bytes[8];
	void *ptr;
};

typedef int (*handler_t)(void *ctx, const char *name, ...);
typedef void (*callback_t)(void);

struct ops {
	handler_t handle;
	callback_t done;
	long (*ioctl)(struct opaque *o, unsigned int cmd, unsigned long arg);
	const struct ops *next;
};

struct packet {
	struct list_head list;
	u32 len;
	union {
		struct {
			u8 proto;
			u8 ttl;
		};
		u32 word;
	};
	struct {
		short x, y;
	} point;
	const volatile int *status;
	char *restrict buf;
	int matrix[2][3][4];
	const char name[16];
	struct opaque *priv;
	union opaque_u *upriv;
	enum color color;
	enum negative neg;
	enum wide w;
	enum signed_wide sw;
	anon_enum_t anon;
	enum wide_values wv;
	enum top_bit top;
	bool_t ok;
	long double ld;
	struct ops *ops;
	struct flags fl;
	union value val;
	u64 tail[];
};

typedef struct packet packet_t;
typedef const packet_t *cpacket_t;

struct packet everything;
cpacket_t cp;
struct ops global_ops;

int sum(int n, ...)
{
	va_list ap;
	int s = 0;
	va_start(ap, n);
	while (n--)
		s += va_arg(ap, int);
	va_end(ap);
	return s;
}

static long get_len(const struct packet *p)
{
	return p->len;
}

void handle(packet_t *p, struct ops *o)
{
	p->len = get_len(p) + o->handle(p, "x");
}
