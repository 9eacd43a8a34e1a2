#!/usr/bin/env python3
# Does a large file written beside the WAL delay the WAL's fdatasyncs, and does pacing its
# writeback help? A thread loops 200-byte write + fdatasync into one file while 300 MB are
# written into another and fsynced, either plainly or with sync_file_range every STEP MiB
# (start the new step, wait for everything before it), as SnapshotFileWriter does.
#
#   python3 scripts/writeback_probe.py plain|sfr [STEP_MIB]   (STEP_MIB defaults to 8; the server uses 1)
#
# Prints the big file's write and fsync times and the fdatasync loop's p99 and worst while they
# ran. Files go to /tmp/fsynctest. Used for issue 12 (figures in its notes and the README).
import os, time, threading, ctypes, sys
libc=ctypes.CDLL(None, use_errno=True)
sfr=libc.sync_file_range; sfr.argtypes=[ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
WAIT_BEFORE,WRITE,WAIT_AFTER=1,2,4
mode=sys.argv[1]
d="/tmp/fsynctest"; os.makedirs(d, exist_ok=True)
try: os.unlink(d+"/big")
except FileNotFoundError: pass
os.sync(); time.sleep(1)
wal=os.open(d+'/wal', os.O_WRONLY|os.O_CREAT|os.O_TRUNC)
lat=[]; stop=False
def walloop():
    while not stop:
        os.write(wal, b'x'*200); t=time.perf_counter(); os.fdatasync(wal); lat.append((time.perf_counter(), time.perf_counter()-t))
th=threading.Thread(target=walloop); th.start()
time.sleep(0.5)
big=os.open(d+'/big', os.O_WRONLY|os.O_CREAT|os.O_TRUNC)
buf=b'y'*(1<<20)
t0=time.perf_counter(); step=int(sys.argv[2]) if len(sys.argv)>2 else 8
for i in range(300):
    os.write(big, buf)
    if mode=='sfr' and (i+1)%step==0:
        off=(i+1-step)<<20
        sfr(big, off, step<<20, WRITE)
        if off>=(step<<20): sfr(big, off-(step<<20), step<<20, WAIT_BEFORE|WRITE|WAIT_AFTER)
t1=time.perf_counter(); os.fsync(big); t2=time.perf_counter()
time.sleep(0.3); stop=True; th.join()
allw=[l for (t,l) in lat if t0<=t<=t2+0.01]; out=[l for (t,l) in lat if t<t0]
allw.sort()
print(mode, 'write %.0f ms fsync %.0f ms'%((t1-t0)*1e3,(t2-t1)*1e3), 'wal before max %.2f; during write+fsync n=%d p99 %.1f max %.1f ms'%(max(out)*1e3, len(allw), allw[int(len(allw)*.99)]*1e3, allw[-1]*1e3))
