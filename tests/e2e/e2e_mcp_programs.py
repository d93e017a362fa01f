"""The MCP agent the MCP end-to-end test ships to its predictors (started with ``--allow-module``).

Each example names the MCP server to use (``mcp_url``, an input the job controls): the program
connects to it (:func:`dspex.utils.mcp.mcp_tools`) and runs a ``ReActV2`` agent over the server's
tools. In a worker the connection is made only if the worker allows that URL (``--allow-mcp-server``).
"""

from __future__ import annotations

from typing import Any

import dspex
from dspex.adapters import JSONAdapter
from dspex.modules import Predict, ReActV2
from dspex.utils.mcp import mcp_tools

__all__ = ["MCPAgent"]


class MCPAgent(dspex.Module):
    """ReActV2 over the tools of the MCP server an example names (its LM: ``self.lm_holder``'s)."""

    def __init__(self) -> None:
        super().__init__()
        # carries the job's LM (a program's LMs are its predictors'); the agent is built per call
        self.lm_holder = Predict("question -> answer: int")

    async def aforward(self, question: str, mcp_url: str) -> Any:
        async with mcp_tools(mcp_url) as tools:
            agent = ReActV2(
                "question -> answer: int",
                tools=tools,
                max_iters=4,
                lm=self.lm_holder.lm,
                adapter=JSONAdapter(),
            )
            pred = await agent.acall(question=question)
        return dspex.Prediction(answer=pred.answer)
