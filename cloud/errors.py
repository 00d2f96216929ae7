"""One exception type for every failure a release engineer should read as one line."""


class KilnError(Exception):
    """A failure with a message that names the file, field or resource at fault.

    Tasks turn it into one line on stderr and a non-zero exit; nothing else is printed.
    """


class ConfigError(KilnError):
    """A setting in the Invoke config tree is missing, unknown or of the wrong type."""


DENIED_CODES = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
                "AuthorizationError", "AccessDeniedFault")


def denied_line(error: BaseException) -> str | None:
    """One line for an AWS refusal (botocore ClientError): the operation and AWS's message,
    which names the identity, the action and the resource; None for any other error."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code", "")
    if code not in DENIED_CODES:
        return None
    message = " ".join(str(response["Error"].get("Message", "")).split())
    operation = getattr(error, "operation_name", "a call")
    return f"AWS denied {operation} ({code}): {message}"
