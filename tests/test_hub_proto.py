"""The Hub service's shape: agents stream in (Connect), users call unary RPCs and watch jobs."""

from __future__ import annotations

from edgelat.proto import hub_pb2 as pb


def test_hub_service_shape():
    service = pb.DESCRIPTOR.services_by_name["Hub"]
    assert service.full_name == "edgelat.hub.v1.Hub"
    shapes = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert shapes == {
        "Connect": (True, True),
        "Submit": (False, False),
        "GetJob": (False, False),
        "ListJobs": (False, False),
        "WatchJob": (False, True),
        "CancelJob": (False, False),
        "RetryJob": (False, False),
        "ListDevices": (False, False),
        "ReadTables": (False, True),
        "CreateToken": (False, False),
    }


def test_tunnel_messages_wrap_the_agent_service():
    """Every Agent request and reply travels inside the tunnel as the agent.proto message itself."""
    hub_msg = pb.DESCRIPTOR.message_types_by_name["HubMessage"]
    reply = pb.DESCRIPTOR.message_types_by_name["AgentReply"]
    requests = {f.name: f.message_type.full_name for f in hub_msg.oneofs_by_name["body"].fields}
    replies = {f.name: f.message_type.full_name for f in reply.oneofs_by_name["body"].fields}
    assert requests["describe"] == "edgelat.agent.v1.DescribeRequest"
    assert requests["put_chunk"] == "edgelat.agent.v1.ModelChunk"
    assert requests["benchmark_batch"] == "edgelat.agent.v1.BenchmarkBatchRequest"
    assert replies["result"] == "edgelat.agent.v1.BenchmarkResult"
    assert replies["describe"] == "edgelat.agent.v1.DescribeResponse"
