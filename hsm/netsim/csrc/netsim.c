/*
 * netsim: a PKCS#11 module that behaves like a network HSM.
 *
 * It forwards every call to a real module (SoftHSMv2 by default) and adds
 * what a network HSM has and an in-process software token lacks: a latency
 * per cryptographic operation (fixed plus uniform jitter), a cap on the
 * operations in flight (beyond it, callers queue, as on a saturated HSM),
 * and faults a test switches on and off while the module is in use (an
 * error code, a hang, a dropped session).
 *
 * Everything is read from the file named by NETSIM_HSM_CONF ("key = value"
 * lines, '#' comments; the keys are documented in hsm/DESIGN.md). The file
 * is looked at again at most every check_ms
 * milliseconds, on the next call; when its mtime, size or inode changed it is
 * re-read, so writing a new file (atomically: write, then rename) switches
 * latency, the cap and faults at run time. See hsm/DESIGN.md and
 * hsm/netsim/netsim.go, which writes the file from Go.
 *
 * Build: gcc -shared -fPIC -O2 -o libnetsimhsm.so netsim.c -ldl -lpthread
 * (the PKCS#11 v2.40 headers beside it come from github.com/miekg/pkcs11).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define CK_PTR *
#define NULL_PTR 0
#define CK_DEFINE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) returnType(*name)
#define CK_CALLBACK_FUNCTION(returnType, name) returnType(*name)
#include "pkcs11.h"

#define EXPORT __attribute__((visibility("default")))
#define DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define CONF_ENV "NETSIM_HSM_CONF"

enum fault { FAULT_NONE, FAULT_ERROR, FAULT_HANG, FAULT_DROP };

struct settings {
	long latency_us;
	long jitter_us;
	long max_in_flight; /* 0: no cap */
	long check_ms;
	enum fault fault;
	CK_RV fault_rv;
	/* fault_token limits the fault to sessions of the token with this
	 * label; empty: every session. */
	char fault_token[33];
	/* fault_count: the fault hits this many calls, then stops; 0: every
	 * call while it is switched on. */
	long fault_count;
	/* gen counts the re-reads of the file: a slot looked up under older
	 * settings must not enter the cache of newer ones. */
	unsigned long gen;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slot_freed = PTHREAD_COND_INITIALIZER;
/* Guarded by mu. */
static struct settings cur;
static long in_flight;
/* Whether each slot seen holds fault_token's token, since the file was last
 * read: SoftHSMv2 answers C_GetTokenInfo by reading the token's files, and
 * doing that on every call of a healthy token while another one is faulty
 * slowed the healthy one down (make bench-failover). */
#define SLOT_CACHE 16
static CK_SLOT_ID cached_slot[SLOT_CACHE];
static int cached_match[SLOT_CACHE];
static int ncached;
static long faults_left; /* of fault_count, since the file was last read */
static struct stat conf_stat;
static uint64_t next_check_ns;

static const char *conf_path;
static char module_path[4096] = DEFAULT_MODULE;
static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST list;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static CK_RV load_rv = CKR_OK;

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_us(long us)
{
	if (us <= 0)
		return;
	struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
	}
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	char *e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = 0;
	return s;
}

static int parse_long(const char *key, const char *v, long *out)
{
	char *end;
	errno = 0;
	long n = strtol(v, &end, 0);
	if (errno != 0 || *end != 0 || n < 0) {
		fprintf(stderr, "netsim: %s: %s = %s is not a non-negative number\n", conf_path, key, v);
		return -1;
	}
	*out = n;
	return 0;
}

/* parse reads the file into s, which holds the values to start from, and
 * the real module's path into module (unless NULL); it returns -1, leaving a
 * message on stderr, when the file is unreadable or wrong. */
static int parse(struct settings *s, char *module)
{
	FILE *f = fopen(conf_path, "r");
	if (f == NULL) {
		fprintf(stderr, "netsim: cannot read %s: %s\n", conf_path, strerror(errno));
		return -1;
	}
	struct settings n = *s;
	n.fault = FAULT_NONE;
	n.fault_rv = CKR_DEVICE_ERROR;
	n.fault_token[0] = 0;
	n.fault_count = 0;
	char line[4352];
	int rc = 0;
	while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
		char *hash = strchr(line, '#');
		if (hash != NULL)
			*hash = 0;
		char *key = trim(line);
		if (*key == 0)
			continue;
		char *eq = strchr(key, '=');
		if (eq == NULL) {
			fprintf(stderr, "netsim: %s: line without '=': %s\n", conf_path, key);
			rc = -1;
			break;
		}
		*eq = 0;
		char *v = trim(eq + 1);
		key = trim(key);
		long num;
		if (strcmp(key, "module") == 0) {
			if (strlen(v) >= sizeof module_path) {
				fprintf(stderr, "netsim: %s: module path too long\n", conf_path);
				rc = -1;
				break;
			}
			if (module != NULL)
				strcpy(module, v);
		} else if (strcmp(key, "latency_us") == 0) {
			rc = parse_long(key, v, &n.latency_us);
		} else if (strcmp(key, "jitter_us") == 0) {
			rc = parse_long(key, v, &n.jitter_us);
		} else if (strcmp(key, "max_in_flight") == 0) {
			rc = parse_long(key, v, &n.max_in_flight);
		} else if (strcmp(key, "check_ms") == 0) {
			rc = parse_long(key, v, &n.check_ms);
		} else if (strcmp(key, "fault_count") == 0) {
			rc = parse_long(key, v, &n.fault_count);
		} else if (strcmp(key, "fault_rv") == 0) {
			rc = parse_long(key, v, &num);
			n.fault_rv = (CK_RV)num;
		} else if (strcmp(key, "fault_token") == 0) {
			if (strlen(v) > 32) {
				fprintf(stderr, "netsim: %s: fault_token is longer than 32 bytes\n", conf_path);
				rc = -1;
				break;
			}
			strcpy(n.fault_token, v);
		} else if (strcmp(key, "fault") == 0) {
			if (strcmp(v, "none") == 0)
				n.fault = FAULT_NONE;
			else if (strcmp(v, "error") == 0)
				n.fault = FAULT_ERROR;
			else if (strcmp(v, "hang") == 0)
				n.fault = FAULT_HANG;
			else if (strcmp(v, "drop") == 0)
				n.fault = FAULT_DROP;
			else {
				fprintf(stderr, "netsim: %s: fault must be none, error, hang or drop, not %s\n", conf_path, v);
				rc = -1;
			}
		} else {
			fprintf(stderr, "netsim: %s: unknown key %s\n", conf_path, key);
			rc = -1;
		}
	}
	fclose(f);
	if (rc == 0)
		*s = n;
	return rc;
}

static int same_file(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* refresh_locked re-reads the file if check_ms passed since the last look
 * and it changed. A file that does not parse leaves the settings as they
 * were. The module path is read once, at load. */
static void refresh_locked(void)
{
	uint64_t now = mono_ns();
	if (now < next_check_ns)
		return;
	next_check_ns = now + (uint64_t)cur.check_ms * 1000000u;
	struct stat st;
	if (stat(conf_path, &st) != 0 || same_file(&st, &conf_stat))
		return;
	conf_stat = st;
	struct settings n = cur;
	if (parse(&n, NULL) != 0)
		return;
	n.gen = cur.gen + 1;
	cur = n;
	faults_left = n.fault_count;
	ncached = 0;
	/* The cap may have grown. */
	pthread_cond_broadcast(&slot_freed);
}

static struct settings snapshot(void)
{
	pthread_mutex_lock(&mu);
	refresh_locked();
	struct settings s = cur;
	pthread_mutex_unlock(&mu);
	return s;
}

/* on_faulty_token: does the fault apply to session h? */
static int on_faulty_token(const struct settings *s, CK_SESSION_HANDLE h)
{
	if (s->fault_token[0] == 0)
		return 1;
	CK_SESSION_INFO si;
	if (real->C_GetSessionInfo(h, &si) != CKR_OK)
		return 0;
	pthread_mutex_lock(&mu);
	for (int i = 0; i < ncached; i++)
		if (cached_slot[i] == si.slotID) {
			int m = cached_match[i];
			pthread_mutex_unlock(&mu);
			return m;
		}
	pthread_mutex_unlock(&mu);
	CK_TOKEN_INFO ti;
	if (real->C_GetTokenInfo(si.slotID, &ti) != CKR_OK)
		return 0;
	size_t n = strlen(s->fault_token);
	int match = memcmp(ti.label, s->fault_token, n) == 0;
	for (size_t i = n; match && i < sizeof ti.label; i++)
		if (ti.label[i] != ' ')
			match = 0;
	pthread_mutex_lock(&mu);
	if (cur.gen == s->gen && ncached < SLOT_CACHE) {
		cached_slot[ncached] = si.slotID;
		cached_match[ncached] = match;
		ncached++;
	}
	pthread_mutex_unlock(&mu);
	return match;
}

/* take_fault counts one call hit by a fault limited by fault_count; it
 * returns 0 when none is left. */
static int take_fault(void)
{
	pthread_mutex_lock(&mu);
	int hit = cur.fault_count == 0 || faults_left > 0;
	if (cur.fault_count > 0 && faults_left > 0)
		faults_left--;
	pthread_mutex_unlock(&mu);
	return hit;
}

/* enter applies a fault switched on for session h: it returns the error to
 * answer, or CKR_OK to go on. A hang lasts until the file no longer says
 * hang. */
static CK_RV enter(CK_SESSION_HANDLE h)
{
	for (int hung = 0;; hung = 1) {
		struct settings s = snapshot();
		if (s.fault == FAULT_NONE || !on_faulty_token(&s, h) || (!hung && !take_fault()))
			return CKR_OK;
		switch (s.fault) {
		case FAULT_ERROR:
			return s.fault_rv;
		case FAULT_DROP:
			real->C_CloseSession(h);
			return CKR_SESSION_HANDLE_INVALID;
		default:
			sleep_us((s.check_ms > 0 ? s.check_ms : 1) * 1000);
		}
	}
}

static __thread uint64_t rng;

static long jitter(long max_us)
{
	if (max_us <= 0)
		return 0;
	if (rng == 0)
		rng = mono_ns() ^ (uint64_t)pthread_self() ^ 0x9e3779b97f4a7c15u;
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (long)(rng % (uint64_t)(max_us + 1));
}

/* begin_op waits for a place among the operations in flight, then for the
 * operation's latency; end_op gives the place back. */
static void begin_op(void)
{
	pthread_mutex_lock(&mu);
	refresh_locked();
	while (cur.max_in_flight > 0 && in_flight >= cur.max_in_flight)
		pthread_cond_wait(&slot_freed, &mu);
	in_flight++;
	long us = cur.latency_us;
	long j = cur.jitter_us;
	pthread_mutex_unlock(&mu);
	sleep_us(us + jitter(j));
}

static void end_op(void)
{
	pthread_mutex_lock(&mu);
	in_flight--;
	pthread_cond_signal(&slot_freed);
	pthread_mutex_unlock(&mu);
}

/* A call that performs an operation in the HSM: fault check, then a place
 * in flight and the latency, then the real call. A length query (NULL
 * output) is answered at once: it is arithmetic a client library does
 * without a round trip, and counting it would double every encrypt's
 * latency. */
#define OP(sess, timed, call)                       \
	do {                                        \
		CK_RV rv_ = enter(sess);            \
		if (rv_ != CKR_OK)                  \
			return rv_;                 \
		if (!(timed))                       \
			return real->call;          \
		begin_op();                         \
		rv_ = real->call;                   \
		end_op();                           \
		return rv_;                         \
	} while (0)

/* Calls that only set up an operation or look at objects: faults apply,
 * latency does not. */
#define PLAIN(sess, call) OP(sess, 0, call)

static CK_RV w_EncryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) { PLAIN(h, C_EncryptInit(h, m, k)); }
static CK_RV w_Encrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inLen, CK_BYTE_PTR out, CK_ULONG_PTR outLen) { OP(h, out != NULL, C_Encrypt(h, in, inLen, out, outLen)); }
static CK_RV w_EncryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inLen, CK_BYTE_PTR out, CK_ULONG_PTR outLen) { OP(h, out != NULL, C_EncryptUpdate(h, in, inLen, out, outLen)); }
static CK_RV w_EncryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR outLen) { OP(h, out != NULL, C_EncryptFinal(h, out, outLen)); }
static CK_RV w_DecryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) { PLAIN(h, C_DecryptInit(h, m, k)); }
static CK_RV w_Decrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inLen, CK_BYTE_PTR out, CK_ULONG_PTR outLen) { OP(h, out != NULL, C_Decrypt(h, in, inLen, out, outLen)); }
static CK_RV w_DecryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inLen, CK_BYTE_PTR out, CK_ULONG_PTR outLen) { OP(h, out != NULL, C_DecryptUpdate(h, in, inLen, out, outLen)); }
static CK_RV w_DecryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR outLen) { OP(h, out != NULL, C_DecryptFinal(h, out, outLen)); }
static CK_RV w_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) { PLAIN(h, C_SignInit(h, m, k)); }
static CK_RV w_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inLen, CK_BYTE_PTR sig, CK_ULONG_PTR sigLen) { OP(h, sig != NULL, C_Sign(h, in, inLen, sig, sigLen)); }
static CK_RV w_VerifyInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k) { PLAIN(h, C_VerifyInit(h, m, k)); }
static CK_RV w_Verify(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inLen, CK_BYTE_PTR sig, CK_ULONG sigLen) { OP(h, 1, C_Verify(h, in, inLen, sig, sigLen)); }
static CK_RV w_DigestInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m) { PLAIN(h, C_DigestInit(h, m)); }
static CK_RV w_Digest(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inLen, CK_BYTE_PTR out, CK_ULONG_PTR outLen) { OP(h, out != NULL, C_Digest(h, in, inLen, out, outLen)); }
static CK_RV w_GenerateKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k) { OP(h, 1, C_GenerateKey(h, m, t, n, k)); }
static CK_RV w_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pt, CK_ULONG pn, CK_ATTRIBUTE_PTR st, CK_ULONG sn, CK_OBJECT_HANDLE_PTR pk, CK_OBJECT_HANDLE_PTR sk) { OP(h, 1, C_GenerateKeyPair(h, m, pt, pn, st, sn, pk, sk)); }
static CK_RV w_WrapKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE w, CK_OBJECT_HANDLE k, CK_BYTE_PTR out, CK_ULONG_PTR outLen) { OP(h, out != NULL, C_WrapKey(h, m, w, k, out, outLen)); }
static CK_RV w_UnwrapKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE u, CK_BYTE_PTR in, CK_ULONG inLen, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k) { OP(h, 1, C_UnwrapKey(h, m, u, in, inLen, t, n, k)); }
static CK_RV w_DeriveKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k) { OP(h, 1, C_DeriveKey(h, m, b, t, n, k)); }
static CK_RV w_CreateObject(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR o) { OP(h, 1, C_CreateObject(h, t, n, o)); }
static CK_RV w_CopyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR c) { OP(h, 1, C_CopyObject(h, o, t, n, c)); }
static CK_RV w_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o) { OP(h, 1, C_DestroyObject(h, o)); }
static CK_RV w_GenerateRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG n) { OP(h, 1, C_GenerateRandom(h, out, n)); }
static CK_RV w_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n) { PLAIN(h, C_FindObjectsInit(h, t, n)); }
static CK_RV w_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR o, CK_ULONG max, CK_ULONG_PTR n) { PLAIN(h, C_FindObjects(h, o, max, n)); }
static CK_RV w_FindObjectsFinal(CK_SESSION_HANDLE h) { PLAIN(h, C_FindObjectsFinal(h)); }
static CK_RV w_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n) { PLAIN(h, C_GetAttributeValue(h, o, t, n)); }
static CK_RV w_SetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n) { PLAIN(h, C_SetAttributeValue(h, o, t, n)); }

static CK_RV w_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out);

static void load(void)
{
	conf_path = getenv(CONF_ENV);
	if (conf_path == NULL || *conf_path == 0) {
		fprintf(stderr, "netsim: set %s to the module's configuration file\n", CONF_ENV);
		load_rv = CKR_GENERAL_ERROR;
		return;
	}
	cur.check_ms = 10;
	if (stat(conf_path, &conf_stat) != 0 || parse(&cur, module_path) != 0) {
		fprintf(stderr, "netsim: cannot load %s\n", conf_path);
		load_rv = CKR_GENERAL_ERROR;
		return;
	}
	faults_left = cur.fault_count;
	void *lib = dlopen(module_path, RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		fprintf(stderr, "netsim: %s\n", dlerror());
		load_rv = CKR_GENERAL_ERROR;
		return;
	}
	CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	if (get == NULL || get(&real) != CKR_OK) {
		fprintf(stderr, "netsim: %s has no usable C_GetFunctionList\n", module_path);
		load_rv = CKR_GENERAL_ERROR;
		return;
	}
	next_check_ns = mono_ns() + (uint64_t)cur.check_ms * 1000000u;
	list = *real;
	list.C_GetFunctionList = w_GetFunctionList;
	list.C_EncryptInit = w_EncryptInit;
	list.C_Encrypt = w_Encrypt;
	list.C_EncryptUpdate = w_EncryptUpdate;
	list.C_EncryptFinal = w_EncryptFinal;
	list.C_DecryptInit = w_DecryptInit;
	list.C_Decrypt = w_Decrypt;
	list.C_DecryptUpdate = w_DecryptUpdate;
	list.C_DecryptFinal = w_DecryptFinal;
	list.C_SignInit = w_SignInit;
	list.C_Sign = w_Sign;
	list.C_VerifyInit = w_VerifyInit;
	list.C_Verify = w_Verify;
	list.C_DigestInit = w_DigestInit;
	list.C_Digest = w_Digest;
	list.C_GenerateKey = w_GenerateKey;
	list.C_GenerateKeyPair = w_GenerateKeyPair;
	list.C_WrapKey = w_WrapKey;
	list.C_UnwrapKey = w_UnwrapKey;
	list.C_DeriveKey = w_DeriveKey;
	list.C_CreateObject = w_CreateObject;
	list.C_CopyObject = w_CopyObject;
	list.C_DestroyObject = w_DestroyObject;
	list.C_GenerateRandom = w_GenerateRandom;
	list.C_FindObjectsInit = w_FindObjectsInit;
	list.C_FindObjects = w_FindObjects;
	list.C_FindObjectsFinal = w_FindObjectsFinal;
	list.C_GetAttributeValue = w_GetAttributeValue;
	list.C_SetAttributeValue = w_SetAttributeValue;
}

static CK_RV w_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
	if (out == NULL)
		return CKR_ARGUMENTS_BAD;
	pthread_once(&load_once, load);
	if (load_rv != CKR_OK)
		return load_rv;
	*out = &list;
	return CKR_OK;
}

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out) { return w_GetFunctionList(out); }
