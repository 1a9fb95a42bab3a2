"""OciCliRuntime: real containers through runc (or crun, youki), one shim per container."""
