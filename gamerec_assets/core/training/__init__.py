"""Training the two-tower model, in one process or in N (a single process is a world of 1).

- `world`: the processes of a job and their collectives (nothing to do for a world of 1);
- `loss`: the in-batch softmax with its corrections (temperature, logQ, accidental hits,
  positive weights), apart from the towers;
- `loop`: the one training loop, epochs of batches, with per-epoch tuning scores;
- `state`: the training state saved after every epoch, from which a killed run resumes;
- `checkpoint`: the self-describing checkpoint of the final model;
- `job`: the description of one training run (serialised once, for the in-process asset and
  the torchrun workers alike) and `run_training`, which both call.
"""
