/* The record layout shared by bpf/trace.bpf.c and capture/decode.py.
 *
 * Two BPF ring buffers carry records:
 *  - `events`: fixed-size records (struct trace_record). Every record has
 *    the same size, so user space finds them by arithmetic and decodes a
 *    whole batch as one numpy structured array. The path slot holds the
 *    first path (or a unix socket path) when it fits.
 *
 * The header is laid out for that columnar decode: the 64-bit fields
 * together, then the 32-bit ones, each a column of the capture schema in its
 * own type, so user space transposes each group once and hands the rows to
 * Arrow as they are. The argument-derived columns (fd, dirfd, flags, mode,
 * ...) are decoded here, from the syscall's plan, and `valid` says which
 * columns hold a value (the TV_* bits: Arrow validity bitmaps, transposed).
 * `path_len` is followed by the path slot, so those 16 bytes are already an
 * Arrow string view (length, then the first 12 bytes, zero-padded).
 *  - `bulky`: variable-size records for what does not fit: exec events
 *    (exepath, argv, cwd, process info), two-path calls (rename, link,
 *    symlink, mount) and paths longer than the slot. A struct trace_event
 *    header followed by items (struct trace_item + bytes), 4-byte aligned.
 *
 * capture/decode.py mirrors this file once (HEADER_DTYPE); change both.
 */
#ifndef TRACE_EVENT_H
#define TRACE_EVENT_H

#define TRACE_PATH_SLOT 152
#define TRACE_COMM_LEN 16

/* trace_event.flags */
#define TF_PATH (1 << 0)        /* path slot holds the first path (path_len bytes) */
#define TF_ADDR (1 << 1)        /* addr_* come from the syscall's sockaddr argument */
#define TF_SOCK (1 << 2)        /* sk_* read from the socket behind the fd */
#define TF_AUX (1 << 3)         /* the syscall's user struct was copied: columns from it are valid */
#define TF_NO_RES (1 << 4)      /* recorded at entry (exit, exit_group): no return value */
#define TF_ADDR_UNIX (1 << 5)   /* path slot holds a unix socket path (path_len bytes) */
#define TF_ARGV_TRUNC (1 << 6)  /* argv cut at TRACE_ARGV_BYTES */
#define TF_CWD_TRUNC (1 << 7)   /* cwd deeper than TRACE_CWD_DEPTH: cwd unknown */
#define TF_NO_ARGS (1 << 8)     /* exec without a recorded syscall entry: args unknown */
#define TF_ENV_TRUNC (1 << 9)   /* environment cut at TRACE_ARGV_BYTES */

/* trace_event.valid: which columns hold a value (bit i: arg i). */
#define TV_RES (1 << 6)
#define TV_FD (1 << 7)
#define TV_FD2 (1 << 8)
#define TV_DIRFD (1 << 9)
#define TV_DIRFD2 (1 << 10)
#define TV_FLAGS (1 << 11)
#define TV_MODE (1 << 12)
#define TV_SOCK_TYPE (1 << 13)
#define TV_SOCK_PROTO (1 << 14)
#define TV_SOCK_FAMILY (1 << 15)
#define TV_PATH (1 << 16)
#define TV_ADDR_PATH (1 << 17)

/* Items of a bulky record. */
#define TI_PATH 1
#define TI_PATH2 2
#define TI_EXEPATH 3
#define TI_ARGV 4      /* argv block as in the process's memory: NUL-separated */
#define TI_CWD_PART 5  /* one cwd component, leaf first */
#define TI_EXEC_INFO 6 /* struct trace_exec_info */
#define TI_ENV 7       /* environment block, like TI_ARGV (only with RECORD_ENV) */

#define TRACE_ARGV_BYTES 4096  /* bound of the argv block and of the environment block */
#define TRACE_STR_MAX 4096
#define TRACE_CWD_DEPTH 32

struct trace_event {
    /* socket endpoints: read only for the few network calls */
    __u8 addr[16];       /* IPv4 in the first 4 bytes */
    __u8 sk_laddr[16];
    __u8 sk_raddr[16];
    /* 64-bit columns */
    __u64 ts;            /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    __u64 cgroup_id;
    __s64 res;
    __u64 args[6];
    __s64 flags_arg;     /* the `flags` column (from an argument or the copied user struct) */
    char comm[TRACE_COMM_LEN];
    /* 32-bit columns */
    __u32 pid;           /* tgid */
    __u32 tid;
    __u32 ppid;          /* real_parent->tgid */
    __u32 uid;           /* cred->euid */
    __u32 gid;           /* cred->egid */
    __u16 nr;            /* syscall number, or TRACE_NR_PROCEXIT */
    __u16 cpu;
    __s32 fd;            /* decoded columns: the low 32 bits of their source */
    __s32 fd2;
    __s32 dirfd;
    __s32 dirfd2;
    __s32 mode;
    __s32 sock_type;
    __s32 sock_proto;
    __u16 flags;         /* TF_* */
    __s16 sock_family;   /* socket()'s domain, else the address argument's family, else the socket's */
    __u16 addr_family;   /* from the sockaddr argument */
    __u16 addr_port;     /* host byte order */
    __u16 sk_family;     /* from the socket */
    __u16 sk_lport;      /* host byte order */
    __u16 sk_rport;      /* host byte order */
    __u16 _pad;
    __u32 _pad2;
    __u32 valid;         /* TV_* */
    __u32 path_len;      /* bytes used in the path slot (last: path_len + the slot form a string view) */
};

struct trace_record {
    struct trace_event hdr;
    char path[TRACE_PATH_SLOT];
};

struct trace_item {
    __u16 tag;
    __u16 len;           /* bytes that follow (strings include their NUL) */
};

struct trace_exec_info {
    __u64 start_time;    /* group leader's start, CLOCK_MONOTONIC ns */
    __u64 cap_effective;
    __u64 cap_permitted;
    __u64 cap_inheritable;
    __u32 loginuid;
    __u32 tty;           /* new_encode_dev() of the controlling tty, 0 when none */
    __u32 sid;
    __u32 pgid;
    __u32 vpid;
    __u8 exe_from_memfd;
    __u8 exe_upper_layer; /* 0 no, 1 yes, 2 unknown (kernel without overlayfs in its BTF) */
    __u8 _pad[2];
};

#endif
