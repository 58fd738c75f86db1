"""ApiError, the real API's Status objects (kind Status, reason, message, details, code), and
its constructors: not_found, already_exists, conflict, bad_request, invalid."""



class ApiError(Exception):
    def __init__(self, code, reason, message, name=None, kind=None, group=None, causes=None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.name, self.kind, self.group, self.causes = name, kind, group, causes
        self.empty_details = False

    def status(self):
        st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": self.message, "reason": self.reason}
        det = {}
        if self.name is not None:
            det["name"] = self.name
        if self.group:
            det["group"] = self.group
        if self.kind is not None:
            det["kind"] = self.kind
        if self.causes:
            det["causes"] = self.causes
        if det or self.empty_details:
            st["details"] = det
        st["code"] = self.code  # the real API's field order: ... reason, details, code
        return st


def not_found(rt, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (rt.qual_plural(), name),
                    name, rt.plural, rt.group)


def already_exists(rt, name):
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (rt.qual_plural(), name),
                    name, rt.plural, rt.group)


def conflict(rt, name):
    return ApiError(409, "Conflict",
                    'Operation cannot be fulfilled on %s "%s": the object has been modified; '
                    'please apply your changes to the latest version and try again'
                    % (rt.qual_plural(), name), name, rt.plural, rt.group)


def bad_request(msg):
    return ApiError(400, "BadRequest", msg)


def invalid(rt, name, field, detail):
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s: %s' % (rt.kind, name or "", field, detail),
                    name or "", rt.kind, rt.group,
                    [{"reason": "FieldValueInvalid", "message": detail, "field": field}])
