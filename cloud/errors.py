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


def lost_line(error: BaseException) -> str | None:
    """One line when the AWS endpoint stopped answering mid-run (the sandbox's server killed,
    a network gone): which endpoint, and what to run; None for any other error. A retry loop's
    final error (tenacity's RetryError) is read through to the attempt that failed."""
    last = getattr(error, "last_attempt", None)
    if last is not None and last.failed:
        error = last.exception()
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    if not isinstance(error, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
        return None
    endpoint = getattr(error, "kwargs", {}).get("endpoint_url") or "the AWS endpoint"
    what = f"{endpoint} stopped answering ({type(error).__name__})"
    if _loopback(endpoint):  # the sandbox's server
        return (f"{what}: the sandbox's server is gone; `invoke sandbox.up` starts it again "
                "(and says when its state went with it and `invoke bootstrap` is needed)")
    return f"{what}: check the network, then run the task again"


def _loopback(endpoint: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(endpoint).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"
