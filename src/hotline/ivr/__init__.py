"""IVR: flow schema (``schema``), validation on save (``validator``), business-hours calendars
(``calendar``) and the interpreter that runs a flow for one call through the call-control API
(``interpreter``)."""
