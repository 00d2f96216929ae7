"""What no process of a sandbox instance may do, as a container runtime's default profile says:
the capabilities it may keep (a bounding set) and the system calls it is refused (a seccomp
filter), set before its init starts and before each session's command.

    python3 /usr/libexec/kiln-sandbox/confine COMMAND [ARG…]   # inside the instance: confine, exec

The base image holds this file (image.py) for the sessions, which enter the instance from outside
(instances.enter_command); boot.py calls `confine()` before it execs the instance's init. Both
run as the instance's root, whose CAP_SYS_ADMIN lets a filter be set without no_new_privs, so
sudo still works under it. Only the standard library: the instance's own python3 runs it.

The filter is built with libseccomp (Debian's libseccomp2, the library Docker, podman and systemd
build theirs with), called through ctypes: it knows each architecture's system call numbers and
how to compare arguments. No Python binding is needed: Debian's python3-seccomp serves only the
system's interpreter, and the ctypes bindings on PyPI are unmaintained.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

# Docker's default set without mknod and raw sockets. No mounting, no devices, no ptrace, no
# modules, no reading files by handle (dac_read_search), no kernel settings (sys_admin).
KEPT_CAPABILITIES = ("chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid",
                     "setpcap", "net_bind_service", "sys_chroot", "audit_write", "setfcap")
CAPABILITY_NUMBERS = {"chown": 0, "dac_override": 1, "fowner": 3, "fsetid": 4, "kill": 5,
                      "setgid": 6, "setuid": 7, "setpcap": 8, "net_bind_service": 10,
                      "sys_chroot": 18, "audit_write": 29, "setfcap": 31}
# Refused with EPERM: reading files by handle past the mounts, the kernel's keyrings (shared with
# the host's), mounting and new namespaces, modules, kexec, BPF, tracing the kernel, the clock,
# swap, the kernel log, accounting.
REFUSED = (
    "open_by_handle_at", "name_to_handle_at", "add_key", "keyctl", "request_key",
    "mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "unshare", "setns", "init_module", "finit_module",
    "delete_module", "kexec_load", "kexec_file_load", "bpf", "perf_event_open", "userfaultfd",
    "lookup_dcookie", "quotactl", "swapon", "swapoff", "syslog", "acct", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "reboot", "iopl", "ioperm", "vhangup",
)
# clone with a flag for a new namespace is refused too; clone3, whose flags a filter cannot
# read, answers ENOSYS, so the C library falls back to clone (as under Docker).
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                   0x40000000, 0x00000080)  # mount, cgroup, uts, ipc, user, pid, net, time
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
SCMP_FLTATR_CTL_NNP = 3  # libseccomp sets no_new_privs unless told not to: sudo needs it unset
PR_CAPBSET_DROP = 24


def _errno_action(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


class _ArgumentTest(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _library() -> ctypes.CDLL:
    try:
        library = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as error:
        raise SystemExit(f"sandbox: libseccomp not found ({error}); a sandbox instance needs it "
                         "(apt-get install libseccomp2)") from error
    library.seccomp_init.restype = ctypes.c_void_p
    library.seccomp_init.argtypes = [ctypes.c_uint32]
    library.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    library.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgumentTest)]
    library.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    library.seccomp_load.argtypes = [ctypes.c_void_p]
    library.seccomp_release.argtypes = [ctypes.c_void_p]
    return library


def refuse_system_calls() -> None:
    """Set the filter on this process; its children and what it execs keep it."""
    library = _library()
    context = library.seccomp_init(SCMP_ACT_ALLOW)
    if not context:
        raise SystemExit("sandbox: seccomp_init failed")
    try:
        def refuse(name: str, action: int, tests=()) -> None:
            number = library.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a system call of this architecture
                return
            array = (_ArgumentTest * max(len(tests), 1))(*tests)
            if library.seccomp_rule_add_array(context, action, number, len(tests), array) != 0:
                raise SystemExit(f"sandbox: seccomp refused a rule for {name}")

        for name in REFUSED:
            refuse(name, _errno_action(errno.EPERM))
        for flag in NAMESPACE_FLAGS:
            refuse("clone", _errno_action(errno.EPERM),
                   [_ArgumentTest(0, SCMP_CMP_MASKED_EQ, flag, flag)])
        refuse("clone3", _errno_action(errno.ENOSYS))
        if library.seccomp_attr_set(context, SCMP_FLTATR_CTL_NNP, 0) != 0:
            raise SystemExit("sandbox: seccomp refused to leave no_new_privs unset")
        loaded = library.seccomp_load(context)
        if loaded != 0:
            raise SystemExit(f"sandbox: seccomp_load failed: {os.strerror(-loaded)}")
    finally:
        library.seccomp_release(context)


def drop_capabilities() -> None:
    """Only KEPT_CAPABILITIES stay in the bounding set: what this process execs, and every
    process after it (sudo's root among them), has no other."""
    libc = ctypes.CDLL(None, use_errno=True)
    kept = {CAPABILITY_NUMBERS[name] for name in KEPT_CAPABILITIES}
    with open("/proc/sys/kernel/cap_last_cap") as last:
        highest = int(last.read())
    for number in range(highest + 1):
        if number not in kept and libc.prctl(PR_CAPBSET_DROP, number, 0, 0, 0) != 0:
            raise SystemExit(f"sandbox: cannot drop capability {number}: "
                             f"{os.strerror(ctypes.get_errno())}")


def confine() -> None:
    """The filter first: setting it without no_new_privs needs CAP_SYS_ADMIN, still held."""
    refuse_system_calls()
    drop_capabilities()


if __name__ == "__main__":
    confine()
    os.execvp(sys.argv[1], sys.argv[1:])
