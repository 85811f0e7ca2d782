"""The programs that are not the server, each a console script.

  - C{chatservice-client} (L{chatservice.tools.client}): the console client,
    with its prompt at a terminal (L{chatservice.tools.client.console});
  - C{chatservice-bench} (L{chatservice.tools.bench}): load a server with
    many clients and measure it;
  - C{chatservice-oper} (L{chatservice.tools.oper}): make an operators-file
    line.

The client and the benchmark connect through L{chatservice.tools.connect}
and read the server's lines with L{chatservice.wireparse}; of the server
they import only that, the rules of names (L{chatservice.text}) and a few
pure helpers.
"""
