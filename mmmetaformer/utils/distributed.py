"""The end of a distributed run, shared by the training loop's hooks and the command-line tools."""


def finish_distributed() -> None:
    """End a distributed run cleanly: wait for every rank, then tear the process group down. A gloo group left to
    the interpreter's final destructors while another rank is already gone can abort the process ("terminate
    called without an active exception") after the run has finished."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
