"""Template management: validation rules of the Skynoo template review, paging."""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied
from server.domain.messaging import Caller
from server.domain.models import Template, UseType
from server.domain.pagination import decode_page_token, encode_page_token, page_size
from server.domain.ports import TemplateRepository
from server.domain.template_text import parse_template, validate_template_code


@dataclass(frozen=True)
class TemplatePage:
    templates: list[Template]
    next_page_token: str
    total_size: int


class TemplateCatalog:
    def __init__(self, templates: TemplateRepository) -> None:
        self._templates = templates

    async def create(self, caller: Caller, code: str, content: str, use_type: UseType) -> Template:
        if not caller.verified:
            raise PermissionDenied(
                "accounts that are not real-name verified cannot create templates",
                reason="ACCOUNT_NOT_VERIFIED",
            )
        violations: list[FieldViolation] = []
        try:
            validate_template_code(code, "template.code")
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        variables: tuple[str, ...] = ()
        try:
            variables = parse_template(content, "template.content").variables
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        if use_type not in (UseType.VERIFICATION, UseType.NOTIFICATION, UseType.MARKETING):
            violations.append(FieldViolation("template.use_type", "a use type is required"))
        if violations:
            raise InvalidArgument(violations, reason="INVALID_TEMPLATE")
        return await self._templates.create(caller.account_id, code, content, use_type, variables)

    async def get(self, caller: Caller, template_id: int) -> Template:
        template = await self._templates.get(caller.account_id, template_id)
        if template is None:
            raise NotFound(f"template {template_id} not found", reason="TEMPLATE_NOT_FOUND")
        return template

    async def list(self, caller: Caller, requested_size: int, token: str) -> TemplatePage:
        size = page_size(requested_size)
        scope = f"templates:{caller.account_id}"
        after_id = 0
        if token:
            (position,) = decode_page_token(token, scope, shape=(int,))
            after_id = int(position)
        templates, total = await self._templates.list_page(caller.account_id, after_id, size + 1)
        next_token = ""
        if len(templates) > size:
            templates = templates[:size]
            next_token = encode_page_token(scope, [templates[-1].id])
        return TemplatePage(templates, next_token, total)

    async def delete(self, caller: Caller, template_id: int) -> None:
        if not await self._templates.delete(caller.account_id, template_id):
            raise NotFound(f"template {template_id} not found", reason="TEMPLATE_NOT_FOUND")
