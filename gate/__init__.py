"""The CI gate: `compress check` judges a run against a committed baseline and a reference run.

    baseline.py   the committed file: portable figures (MACs, params, size, operators, paired
                  accuracy differences) and the commit whose run they record
    verdict.py    typed rows and verdicts (what the gate found, figure by figure)
    portable.py   rows for the figures that are the same on every CPU, against the file
    ab.py         latency A/B: the reference run's and this run's files timed interleaved in
                  fresh processes on this CPU, judged with a confidence interval
    check.py      the whole judgement: the rows, the notes, the exit status
"""
