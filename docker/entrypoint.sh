#!/bin/sh
# The image's entrypoint: `shoal ARGS`, after giving runc what Docker mounts
# read-only, when the container may have it. A worker has CAP_SYS_ADMIN
# (docker-compose.yml); a server lacks it, and both steps then fail quietly
# and change nothing.
#
# 1. The container's own cgroups, writable: runc creates a cgroup per pod under
#    them. The remount covers only this container's subtree, so its pods stay
#    within its limits.
grep -E ' - cgroup2? ' /proc/self/mountinfo | cut -d' ' -f5 | while read -r mountpoint; do
    mount -o remount,bind,rw "$mountpoint" 2>/dev/null || true
done
# 2. The sysctls of the container's own network namespace, writable: the CNI
#    portmap plugin sets route_localnet on the pod bridge to publish a pod's
#    host_port on the node's 127.0.0.1. The rest of /proc/sys stays read-only.
if mount --bind /proc/sys/net /proc/sys/net 2>/dev/null; then
    mount -o remount,bind,rw /proc/sys/net 2>/dev/null || umount /proc/sys/net
fi
exec shoal "$@"
