"""sms.v1.TemplateService."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2
from sms.v1 import template_pb2, template_pb2_grpc

from server.api import convert
from server.api.context import current_caller
from server.domain.models import UseType
from server.domain.template_catalog import TemplateCatalog

Context = grpc.aio.ServicerContext[Any, Any]


class TemplateServicer(template_pb2_grpc.TemplateServiceServicer):
    def __init__(self, catalog: TemplateCatalog) -> None:
        self._catalog = catalog

    async def CreateTemplate(
        self, request: template_pb2.CreateTemplateRequest, context: Context
    ) -> template_pb2.Template:
        t = request.template
        use_type = convert.enum_value(UseType, t.use_type, UseType.UNSPECIFIED)
        created = await self._catalog.create(current_caller(), t.code, t.content, use_type)
        return convert.template(created)

    async def GetTemplate(
        self, request: template_pb2.GetTemplateRequest, context: Context
    ) -> template_pb2.Template:
        return convert.template(await self._catalog.get(current_caller(), request.id))

    async def ListTemplates(
        self, request: template_pb2.ListTemplatesRequest, context: Context
    ) -> template_pb2.ListTemplatesResponse:
        page = await self._catalog.list(current_caller(), request.page_size, request.page_token)
        return template_pb2.ListTemplatesResponse(
            templates=[convert.template(t) for t in page.templates],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def DeleteTemplate(
        self, request: template_pb2.DeleteTemplateRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._catalog.delete(current_caller(), request.id)
        return empty_pb2.Empty()
