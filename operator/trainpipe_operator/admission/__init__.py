"""The operator's admission webhook: approval by RBAC (``approval``), the
rules the CRD's schema cannot express (``rules``), and the kopf handlers and
server that serve both (``webhook``, ``certs``)."""
