"""A DICOM node: series arrive by C-STORE, results go back by C-STORE or STOW-RS (``pantherseg serve-dicom``).

Behind the extra ``pantherseg[dicom]`` (pynetdicom, dicomweb-client beside the DICOM readers and writers);
nothing here is imported by ``inference.py``. The data flow, one module per step (docs/dicom-node.md):

    config.py       NodeConfig: the flags and node.json, checked key by key
    scp.py          the SCP: allow-list at association, C-ECHO, C-STORE of MR images (others refused with a
                    status), limits answered with failure statuses
    spool.py        each instance written durably (fsync, rename) before it is acknowledged; UIDs checked
    journal.py      SQLite journal of studies, instances, jobs and refusals; what resumes after a restart
    completion.py   a series is complete after series_timeout_s without an instance, or at release: queued
    worker.py       the worker process: ensemble loaded once, jobs in order, bad series -> failed job
    segmenter.py    the node's only calls into the engine and the API
    destinations.py where results go (AE@HOST:PORT or a DICOMweb URL) and which outputs go there
    sender.py       C-STORE / STOW-RS with retries and backoff, then a dead-letter folder
    service.py      all of it together; SIGTERM: stop accepting, finish or requeue, exit 0
    status.py       pantherseg node-status: the journal as JSON or a table
"""
