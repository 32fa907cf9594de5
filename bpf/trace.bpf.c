/* trace's syscall recorder, loaded by capture/probe.py with bcc.
 *
 * Attached to raw_syscalls:sys_exit (raw tracepoint: one record per
 * selected syscall, arguments from the saved registers), to
 * syscalls:sys_enter_<name> of exit, exit_group, execve and execveat, and
 * to sched:sched_process_{exec,exit}. Path and sockaddr arguments are read
 * from user memory at syscall exit, like other exit-side tracers: another
 * thread of the process can change them in between.
 * Kernel struct fields are read at offsets from the running kernel's BTF,
 * given as -DOFF_<struct>__<member> by capture/btf.py (the installed headers
 * describe another kernel). Records are committed without a wakeup: user
 * space reads the mmapped ring in bulk on its own schedule.
 *
 * Build-time parameters (-D): MAX_NR, PENDING_MAX, EVENTS_BYTES, BULKY_BYTES,
 * NR_PROCEXIT, NR_EXECVE, RECORD_ENV (exec events carry the environment),
 * and the optional filters EXCLUDE_TGIDS,
 * ONLY_TGIDS, ONLY_CGROUPS (C expressions over `tgid` / `cgroup`) and
 * FILTER_COMMS (use the comm_filter map).
 */
#include <uapi/linux/ptrace.h>
#include "trace_event.h"

#define AF_UNIX_ 1
#define AF_INET_ 2
#define AF_INET6_ 10
#define S_IFMT_ 0170000
#define S_IFSOCK_ 0140000
#define ADDR_IN 1
#define ADDR_OUT 2
#define ADDR_MSG 3
/* Sources of decoded columns (capture/syscalls.py): 0-5 an argument, or these. */
#define SRC_RES 6
#define SRC_AUX_LO 7
#define SRC_AUX_HI 8
#define SRC_AUX0 9
#define SRC_AUX1 10
#define SCRATCH_HALF 16384

#define REG(regs, name) (*(u64 *)((regs) + OFF_pt_regs__##name))

#define READ_KERN(dst, base, off) bpf_probe_read_kernel(&(dst), sizeof(dst), (void *)(base) + (off))

struct plan {
    u8 enabled;
    u8 at_enter;
    u8 exec;
    u8 addr_mode;
    u8 aux_len;
    u8 nargs;
    u8 _pad;
    s16 path;
    s16 path2;
    s16 addr_arg;
    s16 addrlen_arg;
    s16 sock_fd;
    s16 aux_arg;
    /* where each decoded column comes from (SRC_* or an argument index; -1: none) */
    s16 src_fd;
    s16 src_fd2;
    s16 src_dirfd;
    s16 src_dirfd2;
    s16 src_flags;
    s16 src_mode;
    s16 src_sock_type;
    s16 src_sock_proto;
    s16 src_sock_family;
};

struct pending {
    u64 args[6];
    u32 nr;
    u32 _pad;
};

struct scratch_buf {
    char buf[2 * SCRATCH_HALF];
};

struct tp_sys_enter {
    u64 common;
    s32 nr;
    u32 _pad;
    u64 args[6];
};

struct tp_sys_exit {
    u64 common;
    s32 nr;
    u32 _pad;
    s64 ret;
};

struct tp_exec {
    u64 common;
    u32 filename_loc;
    s32 pid;
    s32 old_pid;
};

struct tp_exit {
    u64 common;
    char comm[16];
    s32 pid;
};

BPF_ARRAY(plans, struct plan, MAX_NR);
BPF_HASH(pending, u32, struct pending, PENDING_MAX);
BPF_PERCPU_ARRAY(drops, u64, 1);
BPF_PERCPU_ARRAY(scratch, struct scratch_buf, 1);
BPF_RINGBUF_OUTPUT(events, EVENTS_BYTES / 4096);
BPF_RINGBUF_OUTPUT(bulky, BULKY_BYTES / 4096);
#ifdef FILTER_COMMS
struct comm_key {
    char comm[TRACE_COMM_LEN];
};
BPF_HASH(comm_filter, struct comm_key, u8, 1024);
#endif

static __always_inline void count_drop(void)
{
    u32 zero = 0;
    u64 *n = drops.lookup(&zero);
    if (n)
        *n += 1;
}

/* True when the current task must not be recorded. */
static __always_inline int skip_task(u32 tgid)
{
#ifdef EXCLUDE_TGIDS
    if (EXCLUDE_TGIDS)
        return 1;
#endif
#ifdef ONLY_TGIDS
    if (!(ONLY_TGIDS))
        return 1;
#endif
#ifdef ONLY_CGROUPS
    u64 cgroup = bpf_get_current_cgroup_id();
    if (!(ONLY_CGROUPS))
        return 1;
#endif
#ifdef FILTER_COMMS
    struct comm_key key = {};
    bpf_get_current_comm(key.comm, sizeof(key.comm));
    if (!comm_filter.lookup(&key))
        return 1;
#endif
    return 0;
}

static __always_inline u64 arg_at(const u64 *args, int i)
{
    switch (i) {
    case 0: return args[0];
    case 1: return args[1];
    case 2: return args[2];
    case 3: return args[3];
    case 4: return args[4];
    case 5: return args[5];
    }
    return 0;
}

/* The thread context of every record. Read with plain loads through the
 * BTF-typed current task (`task`, from bpf_get_current_task_btf(); the
 * verifier checks each offset against the kernel's BTF): a helper call per
 * field costs several times more. `ts` is taken by the caller before the
 * ring reservation: the clock read (an ordered rdtsc) is cheaper before the
 * record's stores are in flight (measured on the flood). */
static __always_inline void fill_common(struct trace_event *e, char *task, u64 ts, u32 nr, const u64 *args, s64 res,
                                        u16 flags)
{
    char *parent = *(char **)(task + OFF_task_struct__real_parent);
    char *cred = *(char **)(task + OFF_task_struct__cred);
    char *css_set = *(char **)(task + OFF_task_struct__cgroups);
    char *cgroup = *(char **)(css_set + OFF_css_set__dfl_cgrp);
    char *kn = *(char **)(cgroup + OFF_cgroup__kn);

    e->ts = ts;
    e->cgroup_id = *(u64 *)(kn + OFF_kernfs_node__id);  /* what bpf_get_current_cgroup_id() returns */
    e->res = res;
    e->args[0] = args[0];
    e->args[1] = args[1];
    e->args[2] = args[2];
    e->args[3] = args[3];
    e->args[4] = args[4];
    e->args[5] = args[5];
    e->pid = *(u32 *)(task + OFF_task_struct__tgid);
    e->tid = *(u32 *)(task + OFF_task_struct__pid);
    e->ppid = *(u32 *)(parent + OFF_task_struct__tgid);
    e->uid = *(u32 *)(cred + OFF_cred__euid);
    e->gid = *(u32 *)(cred + OFF_cred__egid);
    e->nr = nr;
    e->cpu = bpf_get_smp_processor_id();
    e->flags = flags;
    e->sock_family = 0;
    e->path_len = 0;
    *(u64 *)&e->comm[0] = *(u64 *)(task + OFF_task_struct__comm);
    *(u64 *)&e->comm[8] = *(u64 *)(task + OFF_task_struct__comm + 8);
}

/* One decoded column from its source (an argument, the return value or the
 * copied user struct), marking it in `valid` when the source holds a value.
 * Most columns have no source for a given call: that is the first test. */
static __always_inline s64 pick(s16 src, const u64 *args, s64 res, const u64 *aux, u16 flags, u32 *valid, u32 bit)
{
    if (src < 0)
        return 0;
    if (src < 6) {
        if (flags & TF_NO_ARGS)
            return 0;
        *valid |= bit;
        return args[src];
    }
    if (src == SRC_RES) {
        if (flags & TF_NO_RES)
            return 0;
        *valid |= bit;
        return res;
    }
    if (src > SRC_AUX1 || !(flags & TF_AUX))
        return 0;
    *valid |= bit;
    if (src == SRC_AUX_LO)
        return (s32)aux[0];
    if (src == SRC_AUX_HI)
        return (s32)(aux[0] >> 32);
    return src == SRC_AUX0 ? aux[0] : aux[1];
}

/* The argument-derived columns and the `valid` bits, once the TF_* flags are
 * final. Computed in registers and stored once: the record is ring memory. */
static __always_inline void decode_columns(struct trace_event *e, const struct plan *p, const u64 *args, s64 res,
                                           const u64 *aux)
{
    u16 flags = e->flags;
    u32 valid = 0;
    u32 nargs = p->nargs > 6 ? 6 : p->nargs;
    if (!(flags & TF_NO_ARGS))
        valid |= (1u << nargs) - 1;
    if (!(flags & TF_NO_RES))
        valid |= TV_RES;
    e->fd = pick(p->src_fd, args, res, aux, flags, &valid, TV_FD);
    e->fd2 = pick(p->src_fd2, args, res, aux, flags, &valid, TV_FD2);
    e->dirfd = pick(p->src_dirfd, args, res, aux, flags, &valid, TV_DIRFD);
    e->dirfd2 = pick(p->src_dirfd2, args, res, aux, flags, &valid, TV_DIRFD2);
    e->flags_arg = pick(p->src_flags, args, res, aux, flags, &valid, TV_FLAGS);
    e->mode = pick(p->src_mode, args, res, aux, flags, &valid, TV_MODE);
    e->sock_type = pick(p->src_sock_type, args, res, aux, flags, &valid, TV_SOCK_TYPE);
    e->sock_proto = pick(p->src_sock_proto, args, res, aux, flags, &valid, TV_SOCK_PROTO);
    if (p->src_sock_family >= 0) {
        e->sock_family = pick(p->src_sock_family, args, res, aux, flags, &valid, TV_SOCK_FAMILY);
    } else if (flags & TF_ADDR) {
        e->sock_family = e->addr_family;
        valid |= TV_SOCK_FAMILY;
    } else if (flags & TF_SOCK) {
        e->sock_family = e->sk_family;
        valid |= TV_SOCK_FAMILY;
    }
    if (flags & TF_PATH)
        valid |= TV_PATH;
    if (flags & TF_ADDR_UNIX)
        valid |= TV_ADDR_PATH;
    e->valid = valid;
}

/* The sockaddr argument: IP family, address and port, or a unix path into the path slot. */
static __always_inline void read_addr(struct trace_record *r, const struct plan *p, const u64 *args, s64 res)
{
    void *uaddr = (void *)arg_at(args, p->addr_arg);
    u32 alen = 0;
    u16 family = 0, port = 0;

    if (p->addr_mode == ADDR_IN) {
        alen = arg_at(args, p->addrlen_arg);
    } else if (p->addr_mode == ADDR_OUT) {
        if (res < 0 || !uaddr)
            return;
        bpf_probe_read_user(&alen, sizeof(alen), (void *)arg_at(args, p->addrlen_arg));
    } else if (p->addr_mode == ADDR_MSG) {
        struct { u64 name; u32 namelen; } msg = {};
        if (!uaddr || bpf_probe_read_user(&msg, sizeof(msg), uaddr))
            return;
        uaddr = (void *)msg.name;
        alen = msg.namelen;
    }
    if (!uaddr || alen < 2 || bpf_probe_read_user(&family, sizeof(family), uaddr))
        return;
    if (family == AF_INET_ && alen >= 8) {
        bpf_probe_read_user(&port, sizeof(port), uaddr + 2);
        bpf_probe_read_user(r->hdr.addr, 4, uaddr + 4);
    } else if (family == AF_INET6_ && alen >= 24) {
        bpf_probe_read_user(&port, sizeof(port), uaddr + 2);
        bpf_probe_read_user(r->hdr.addr, 16, uaddr + 8);
    } else if (family == AF_UNIX_) {
        u64 n = (alen - 2) & 127;
        if (n > 108)
            n = 108;
        if (bpf_probe_read_user(r->path, n, uaddr + 2) == 0) {
            r->hdr.path_len = n;
            r->hdr.flags |= TF_ADDR_UNIX;
        }
    } else {
        return;
    }
    r->hdr.addr_family = family;
    r->hdr.addr_port = __builtin_bswap16(port);
    r->hdr.flags |= TF_ADDR;
}

/* Both endpoints of the socket behind `fd`, via task->files->fdt->fd[fd]. */
static __always_inline void read_sock(struct trace_event *e, s64 fd)
{
    void *task = (void *)bpf_get_current_task();
    void *files = 0, *fdt = 0, *fdarr = 0, *file = 0, *inode = 0, *sock = 0, *sk = 0;
    u32 max_fds = 0;
    u16 mode = 0, family = 0, lport = 0, rport = 0;

    if (fd < 0)
        return;
    READ_KERN(files, task, OFF_task_struct__files);
    READ_KERN(fdt, files, OFF_files_struct__fdt);
    READ_KERN(max_fds, fdt, OFF_fdtable__max_fds);
    if (fd >= max_fds)
        return;
    READ_KERN(fdarr, fdt, OFF_fdtable__fd);
    READ_KERN(file, fdarr, fd * sizeof(void *));
    if (!file)
        return;
    READ_KERN(inode, file, OFF_file__f_inode);
    READ_KERN(mode, inode, OFF_inode__i_mode);
    if ((mode & S_IFMT_) != S_IFSOCK_)
        return;
    READ_KERN(sock, file, OFF_file__private_data);
    READ_KERN(sk, sock, OFF_socket__sk);
    if (!sk)
        return;
    READ_KERN(family, sk, OFF_sock_common__skc_family);
    if (family == AF_INET_) {
        bpf_probe_read_kernel(e->sk_laddr, 4, sk + OFF_sock_common__skc_rcv_saddr);
        bpf_probe_read_kernel(e->sk_raddr, 4, sk + OFF_sock_common__skc_daddr);
    } else if (family == AF_INET6_) {
        bpf_probe_read_kernel(e->sk_laddr, 16, sk + OFF_sock_common__skc_v6_rcv_saddr);
        bpf_probe_read_kernel(e->sk_raddr, 16, sk + OFF_sock_common__skc_v6_daddr);
    } else {
        return;
    }
    READ_KERN(lport, sk, OFF_sock_common__skc_num);
    READ_KERN(rport, sk, OFF_sock_common__skc_dport);
    e->sk_family = family;
    e->sk_lport = lport;
    e->sk_rport = __builtin_bswap16(rport);
    e->flags |= TF_SOCK;
}

/* Append one item to a bulky record in the scratch buffer; returns the new end. */
static __always_inline u32 put_str(struct scratch_buf *s, u32 pos, u16 tag, const void *src, int user)
{
    long n;
    pos = (pos + 3) & ~3;
    if (pos >= SCRATCH_HALF)
        return pos;
    pos &= SCRATCH_HALF - 1;
    if (user)
        n = bpf_probe_read_user_str(&s->buf[pos + 4], TRACE_STR_MAX, src);
    else
        n = bpf_probe_read_kernel_str(&s->buf[pos + 4], TRACE_STR_MAX, src);
    if (n <= 0)
        return pos;
    struct trace_item *it = (struct trace_item *)&s->buf[pos];
    it->tag = tag;
    it->len = n;
    return pos + 4 + n;
}

static __always_inline void bulky_submit(struct scratch_buf *s, u32 len)
{
    len = (len + 3) & ~3;
    if (len > SCRATCH_HALF + TRACE_STR_MAX + 8)
        len = SCRATCH_HALF + TRACE_STR_MAX + 8;
    if (len < sizeof(struct trace_event))
        len = sizeof(struct trace_event);
    if (bulky.ringbuf_output((void *)s, len, BPF_RB_NO_WAKEUP))
        count_drop();
}

static __always_inline struct scratch_buf *get_scratch(void)
{
    u32 zero = 0;
    return scratch.lookup(&zero);
}

/* A syscall whose paths do not fit the fixed record: header + path items. */
static __always_inline void emit_bulky_paths(struct scratch_buf *s, const struct plan *p, const u64 *args)
{
    u32 pos = sizeof(struct trace_event);
    if (p->path >= 0)
        pos = put_str(s, pos, TI_PATH, (void *)arg_at(args, p->path), 1);
    if (p->path2 >= 0)
        pos = put_str(s, pos, TI_PATH2, (void *)arg_at(args, p->path2), 1);
    bulky_submit(s, pos);
}

static __always_inline void emit_syscall(char *task, u32 nr, const struct plan *p, const u64 *args, s64 res, u16 flags)
{
    u64 ts = bpf_ktime_get_ns();
    u64 aux[2] = {};
    if (p->path2 >= 0) {
        struct scratch_buf *s = get_scratch();
        if (!s) {
            count_drop();
            return;
        }
        fill_common((struct trace_event *)s->buf, task, ts, nr, args, res, flags);
        decode_columns((struct trace_event *)s->buf, p, args, res, aux);
        emit_bulky_paths(s, p, args);
        return;
    }
    struct trace_record *r = events.ringbuf_reserve(sizeof(struct trace_record));
    if (!r) {
        count_drop();
        return;
    }
    fill_common(&r->hdr, task, ts, nr, args, res, flags);
    /* The string view's inline bytes past a short path (or none) must be zero. */
    *(u64 *)&r->path[0] = 0;
    *(u64 *)&r->path[8] = 0;
    if (p->aux_len && res >= 0) {
        u32 n = p->aux_len > 8 ? 16 : 8;
        if (bpf_probe_read_user(aux, n, (void *)arg_at(args, p->aux_arg)) == 0)
            r->hdr.flags |= TF_AUX;
    }
    if (p->addr_mode)
        read_addr(r, p, args, res);
    if (p->sock_fd >= 0)
        read_sock(&r->hdr, p->sock_fd == SRC_RES ? res : (s32)arg_at(args, p->sock_fd));
    if (p->path >= 0) {
        long n = bpf_probe_read_user_str(r->path, TRACE_PATH_SLOT, (void *)arg_at(args, p->path));
        if (n == TRACE_PATH_SLOT) {  /* may be cut: move it to the bulky ring */
            struct scratch_buf *s = get_scratch();
            decode_columns(&r->hdr, p, args, res, aux);
            if (s)
                bpf_probe_read_kernel(s->buf, sizeof(struct trace_event), &r->hdr);
            events.ringbuf_discard(r, BPF_RB_NO_WAKEUP);
            if (s)
                emit_bulky_paths(s, p, args);
            else
                count_drop();
            return;
        }
        if (n > 0) {
            r->hdr.path_len = n - 1;
            r->hdr.flags |= TF_PATH;
        }
    }
    decode_columns(&r->hdr, p, args, res, aux);
    events.ringbuf_submit(r, BPF_RB_NO_WAKEUP);
}

/* syscalls:sys_enter_<name> of the calls that need their entry: exit and
 * exit_group never return (recorded here), execve/execveat replace the
 * memory and registers their arguments live in (stashed for on_exec). */
int on_sys_enter(struct tp_sys_enter *ctx)
{
    u32 nr = ctx->nr;
    struct plan *p = plans.lookup(&nr);
    if (!p || !p->enabled)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    if (skip_task(id >> 32))
        return 0;
    struct pending v = {};
    v.nr = nr;
    /* Not ctx->args[i]: the kernel refuses direct reads past a syscall's last argument. */
    u32 nargs = p->nargs;
    if (nargs > 6)
        nargs = 6;
    bpf_probe_read_kernel(v.args, nargs * sizeof(u64), (void *)ctx + offsetof(struct tp_sys_enter, args));
    if (p->at_enter) {
        emit_syscall((char *)bpf_get_current_task_btf(), nr, p, v.args, 0, TF_NO_RES);
        return 0;
    }
    u32 tid = (u32)id;
    pending.update(&tid, &v);
    return 0;
}

/* raw_syscalls:sys_exit as a raw tracepoint (no perf record is built): the
 * arguments are still in the saved user registers, so no entry hook and no
 * per-thread map are needed on the hot path. A fork child returns here too,
 * with a copy of its parent's registers. The registers and the ids are plain
 * loads through the BTF-typed current task (bpf_task_pt_regs gives the same
 * pt_regs as ctx->args[0], typed): a probe-read helper per event costs more. */
int on_raw_exit(struct bpf_raw_tracepoint_args *ctx)
{
    s64 ret = ctx->args[1];
    char *task = (char *)bpf_get_current_task_btf();
    char *regs = (char *)bpf_task_pt_regs((struct task_struct *)task);
    u64 orig_ax = REG(regs, orig_ax);
    if (orig_ax >= MAX_NR)
        return 0;
    u32 nr = orig_ax;
    struct plan *p = plans.lookup(&nr);
    if (!p || !p->enabled || p->at_enter)
        return 0;
    if (p->exec) {
        u32 tid = *(u32 *)(task + OFF_task_struct__pid);
        pending.delete(&tid);
        if (ret == 0)
            return 0;  /* recorded by on_exec, in the new image */
    }
    if (skip_task(*(u32 *)(task + OFF_task_struct__tgid)))
        return 0;
    u64 args[6] = {REG(regs, di), REG(regs, si), REG(regs, dx), REG(regs, r10), REG(regs, r8), REG(regs, r9)};
    emit_syscall(task, nr, p, args, ret, 0);
    return 0;
}

static __always_inline u32 pid_nr_of(void *pid_struct, u32 level)
{
    u32 nr = 0;
    if (pid_struct)
        READ_KERN(nr, pid_struct, OFF_pid__numbers + (level & 31) * SIZEOF_upid);
    return nr;
}

#define OVERLAYFS_SUPER_MAGIC 0x794c7630

/* Falco's proc.is_exe_upper_layer: the executable is an overlayfs file whose
 * upper-layer dentry is the file itself (written in the container, not
 * shipped in an image layer). 2 when this kernel's BTF has no overlayfs. */
static __always_inline u8 exe_upper_layer(void *exe)
{
#if defined(OFF_ovl_inode__upperdentry) && defined(OFF_ovl_inode__vfs_inode) && defined(OFF_inode__i_sb) && \
    defined(OFF_super_block__s_magic) && defined(OFF_inode__i_ino) && defined(OFF_dentry__d_inode)
    void *inode = 0, *sb = 0, *upper = 0, *upper_inode = 0;
    unsigned long magic = 0, ino = 0, upper_ino = 0;
    if (!exe)
        return 0;
    READ_KERN(inode, exe, OFF_file__f_inode);
    READ_KERN(sb, inode, OFF_inode__i_sb);
    READ_KERN(magic, sb, OFF_super_block__s_magic);
    if (magic != OVERLAYFS_SUPER_MAGIC)
        return 0;
    READ_KERN(upper, inode - OFF_ovl_inode__vfs_inode, OFF_ovl_inode__upperdentry);
    if (!upper)
        return 0;
    READ_KERN(upper_inode, upper, OFF_dentry__d_inode);
    READ_KERN(upper_ino, upper_inode, OFF_inode__i_ino);
    READ_KERN(ino, inode, OFF_inode__i_ino);
    return ino == upper_ino;
#else
    return 2;
#endif
}

static __always_inline void read_exec_info(struct trace_exec_info *info, void *task)
{
    void *leader = 0, *cred = 0, *signal = 0, *tty = 0, *driver = 0, *thread_pid = 0;
    void *pgrp = 0, *session = 0, *mm = 0, *exe = 0, *dentry = 0, *inode = 0, *name = 0;
    u32 level = 0, nlink = 1;
    int index = 0, major = 0, minor_start = 0;
    char prefix[8] = {};

    READ_KERN(leader, task, OFF_task_struct__group_leader);
    READ_KERN(info->start_time, leader, OFF_task_struct__start_time);
    READ_KERN(info->loginuid, task, OFF_task_struct__loginuid);
    READ_KERN(cred, task, OFF_task_struct__cred);
    READ_KERN(info->cap_effective, cred, OFF_cred__cap_effective);
    READ_KERN(info->cap_permitted, cred, OFF_cred__cap_permitted);
    READ_KERN(info->cap_inheritable, cred, OFF_cred__cap_inheritable);
    READ_KERN(signal, task, OFF_task_struct__signal);
    READ_KERN(tty, signal, OFF_signal_struct__tty);
    info->tty = 0;
    if (tty) {
        READ_KERN(index, tty, OFF_tty_struct__index);
        READ_KERN(driver, tty, OFF_tty_struct__driver);
        READ_KERN(major, driver, OFF_tty_driver__major);
        READ_KERN(minor_start, driver, OFF_tty_driver__minor_start);
        u32 minor = minor_start + index;
        info->tty = (minor & 0xff) | ((u32)major << 8) | ((minor & ~0xffu) << 12);
    }
    READ_KERN(pgrp, signal, OFF_signal_struct__pids + ENUM_PIDTYPE_PGID * sizeof(void *));
    READ_KERN(session, signal, OFF_signal_struct__pids + ENUM_PIDTYPE_SID * sizeof(void *));
    info->pgid = pid_nr_of(pgrp, 0);
    info->sid = pid_nr_of(session, 0);
    READ_KERN(thread_pid, task, OFF_task_struct__thread_pid);
    if (thread_pid)
        READ_KERN(level, thread_pid, OFF_pid__level);
    info->vpid = pid_nr_of(thread_pid, level);
    /* A memfd's dentry is named "memfd:<name>" and it has no links. */
    info->exe_from_memfd = 0;
    READ_KERN(mm, task, OFF_task_struct__mm);
    READ_KERN(exe, mm, OFF_mm_struct__exe_file);
    if (exe) {
        READ_KERN(dentry, exe, OFF_file__f_path + OFF_path__dentry);
        READ_KERN(name, dentry, OFF_dentry__d_name_name);
        bpf_probe_read_kernel(prefix, 6, name);
        READ_KERN(inode, exe, OFF_file__f_inode);
        READ_KERN(nlink, inode, OFF_inode__i_nlink);
        info->exe_from_memfd = nlink == 0 && prefix[0] == 'm' && prefix[1] == 'e' && prefix[2] == 'm' &&
                               prefix[3] == 'f' && prefix[4] == 'd' && prefix[5] == ':';
    }
    info->exe_upper_layer = exe_upper_layer(exe);
}

/* A NUL-separated block of the new image's memory (argv or environment), at most TRACE_ARGV_BYTES. */
static __always_inline u32 put_user_block(struct scratch_buf *s, u32 pos, u16 tag, u64 start, u64 end, u16 cut,
                                          u16 *flags)
{
    u64 len = end > start ? end - start : 0;
    if (len > TRACE_ARGV_BYTES) {
        len = TRACE_ARGV_BYTES;
        *flags |= cut;
    }
    pos = (pos + 3) & ~3;
    if (pos >= SCRATCH_HALF) {
        *flags |= cut;
        return pos;
    }
    pos &= SCRATCH_HALF - 1;
    if (bpf_probe_read_user(&s->buf[pos + 4], len & (2 * TRACE_ARGV_BYTES - 1), (void *)start))
        return pos;
    struct trace_item *it = (struct trace_item *)&s->buf[pos];
    it->tag = tag;
    it->len = len;
    return pos + 4 + len;
}

/* cwd as its components, leaf first, from fs->pwd up to fs->root, crossing mounts. */
static __always_inline u32 put_cwd(struct scratch_buf *s, u32 pos, void *task, u16 *flags)
{
    void *fs = 0, *mnt = 0, *dentry = 0, *root_mnt = 0, *root_dentry = 0;
    READ_KERN(fs, task, OFF_task_struct__fs);
    READ_KERN(mnt, fs, OFF_fs_struct__pwd + OFF_path__mnt);
    READ_KERN(dentry, fs, OFF_fs_struct__pwd + OFF_path__dentry);
    READ_KERN(root_mnt, fs, OFF_fs_struct__root + OFF_path__mnt);
    READ_KERN(root_dentry, fs, OFF_fs_struct__root + OFF_path__dentry);

#pragma unroll
    for (int i = 0; i < TRACE_CWD_DEPTH; i++) {
        void *mnt_root = 0, *parent = 0, *name = 0;
        if (dentry == root_dentry && mnt == root_mnt)
            return pos;
        READ_KERN(mnt_root, mnt, OFF_vfsmount__mnt_root);
        if (dentry == mnt_root) {
            void *mount = mnt - OFF_mount__mnt, *mount_parent = 0;
            READ_KERN(mount_parent, mount, OFF_mount__mnt_parent);
            if (mount_parent == mount)
                return pos;
            READ_KERN(dentry, mount, OFF_mount__mnt_mountpoint);
            mnt = mount_parent + OFF_mount__mnt;
            continue;
        }
        READ_KERN(parent, dentry, OFF_dentry__d_parent);
        if (parent == dentry)
            return pos;
        READ_KERN(name, dentry, OFF_dentry__d_name_name);
        if (((pos + 3) & ~3) >= SCRATCH_HALF - 256)  /* no room for another name: cwd unknown */
            break;
        u32 next = put_str(s, pos, TI_CWD_PART, name, 0);
        if (next <= ((pos + 3) & ~3)) {  /* unreadable name: a cwd with a hole would be wrong */
            *flags |= TF_CWD_TRUNC;
            return next;
        }
        pos = next;
        dentry = parent;
    }
    *flags |= TF_CWD_TRUNC;
    return pos;
}

int on_exec(struct tp_exec *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 old_tid = ctx->old_pid;
    u16 flags = 0;
    struct pending v = {};
    struct pending *found = pending.lookup(&old_tid);

    if (found) {
        v = *found;
        pending.delete(&old_tid);
    } else {
        if (skip_task(id >> 32))
            return 0;
        v.nr = NR_EXECVE;
        flags |= TF_NO_ARGS;
    }
    u32 nr = v.nr;
    struct plan *p = plans.lookup(&nr);
    if (!p || !p->enabled || !p->exec)
        return 0;
    struct scratch_buf *s = get_scratch();
    if (!s) {
        count_drop();
        return 0;
    }
    void *task = (void *)bpf_get_current_task();
    struct trace_event *e = (struct trace_event *)s->buf;
    u32 pos = sizeof(struct trace_event);

    /* Fixed-size info first, cwd last: when a huge argv and env and a deep
     * cwd do not all fit, it is the cwd that is dropped, and flagged. */
    pos = (pos + 3) & ~3;
    if (pos < SCRATCH_HALF) {
        pos &= SCRATCH_HALF - 1;
        struct trace_item *it = (struct trace_item *)&s->buf[pos];
        it->tag = TI_EXEC_INFO;
        it->len = sizeof(struct trace_exec_info);
        read_exec_info((struct trace_exec_info *)&s->buf[pos + 4], task);
        pos += 4 + sizeof(struct trace_exec_info);
    }

    pos = put_str(s, pos, TI_EXEPATH, (void *)ctx + (ctx->filename_loc & 0xFFFF), 0);

    void *mm = 0;
    u64 arg_start = 0, arg_end = 0;
    READ_KERN(mm, task, OFF_task_struct__mm);
    READ_KERN(arg_start, mm, OFF_mm_struct__arg_start);
    READ_KERN(arg_end, mm, OFF_mm_struct__arg_end);
    pos = put_user_block(s, pos, TI_ARGV, arg_start, arg_end, TF_ARGV_TRUNC, &flags);
#ifdef RECORD_ENV
    u64 env_start = 0, env_end = 0;
    READ_KERN(env_start, mm, OFF_mm_struct__env_start);
    READ_KERN(env_end, mm, OFF_mm_struct__env_end);
    pos = put_user_block(s, pos, TI_ENV, env_start, env_end, TF_ENV_TRUNC, &flags);
#endif

    pos = put_cwd(s, pos, task, &flags);
    u64 no_aux[2] = {};
    fill_common(e, (char *)bpf_get_current_task_btf(), bpf_ktime_get_ns(), nr, v.args, 0, flags);
    decode_columns(e, p, v.args, 0, no_aux);
    bulky_submit(s, pos);
    return 0;
}

int on_task_exit(struct tp_exit *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    pending.delete(&tid);
    if (skip_task(id >> 32))
        return 0;
    u64 ts = bpf_ktime_get_ns();
    struct trace_record *r = events.ringbuf_reserve(sizeof(struct trace_record));
    if (!r) {
        count_drop();
        return 0;
    }
    u64 no_args[6] = {};
    int exit_code = 0;
    READ_KERN(exit_code, (void *)bpf_get_current_task(), OFF_task_struct__exit_code);
    fill_common(&r->hdr, (char *)bpf_get_current_task_btf(), ts, NR_PROCEXIT, no_args, exit_code, 0);
    r->hdr.valid = TV_RES;
    *(u64 *)&r->path[0] = 0;
    *(u64 *)&r->path[8] = 0;
    events.ringbuf_submit(r, BPF_RB_NO_WAKEUP);
    return 0;
}
