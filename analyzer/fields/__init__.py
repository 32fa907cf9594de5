"""The field catalog: Falco field names mapped onto the analyzer's `events` view.

Kept apart from the condition compiler the way pySigma keeps processing
pipelines apart from backends: the compiler asks the catalog what a field
is; it never knows how the capture stores it.
"""
